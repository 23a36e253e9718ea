"""Where a client's personal state (``context.state``) lives between calls: in memory, or on disk.

After every training call the ClientApp saves the client's state to its run directory
(:func:`fedpersonal.checkpoint.save_client_state`). In memory mode the state also stays in the
node's ``context.state``, which the simulation keeps for every node that ever trained. With many
clients (run-config key ``client-state``: ``disk``, or ``auto`` above :data:`ON_DISK_ABOVE`
clients) the state is *parked* after each call: ``context.state`` keeps only a marker naming the
round of the saved file, and the next call reads the state back from that file. A resumed run
reloads each client's newest state saved up to the checkpoint's round.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ConfigRecord, ConfigRecordValues, Context

from fedpersonal.checkpoint import client_state_file, load_client_state, read_client_state
from fedpersonal.config import RunConfig

ON_DISK_ABOVE = 1_000  # clients: above this, client-state 'auto' keeps personal state on disk
PARKED = "fedpersonal.parked"  # the marker record: {"round": the round whose saved file holds the state}


def on_disk(cfg: RunConfig) -> bool:
    """Whether the run keeps personal state on disk between calls."""
    return cfg.client_state == "disk" or (cfg.client_state == "auto" and cfg.num_clients > ON_DISK_ABOVE)


def restore(context: Context, config: ConfigRecord, base: Path | None, partition_id: int) -> int | None:
    """Put the client's personal state into ``context.state`` for this call: read a parked state back
    from its file, or after a resume the newest state saved up to the checkpoint's round. Returns the
    round of a parked state read back (None otherwise)."""
    marker = context.state.get(PARKED)
    if isinstance(marker, ConfigRecord) and base is not None:
        del context.state[PARKED]
        parked = int(marker["round"])  # type: ignore[arg-type]
        _fill(context, read_client_state(client_state_file(base, partition_id, parked)))
        return parked
    resume_round = int(config.get("resume-round", 0))  # type: ignore[arg-type]
    if resume_round > 0 and not context.state and base is not None:
        saved = load_client_state(base, partition_id, resume_round)
        if saved is not None:
            _fill(context, saved)
    return None


def park(context: Context, saved_round: int) -> None:
    """Drop the personal state from memory, keeping the marker of the round whose file holds it."""
    for key in list(context.state.keys()):
        del context.state[key]
    marker: dict[str, ConfigRecordValues] = {"round": saved_round}
    context.state[PARKED] = ConfigRecord(marker)


def _fill(context: Context, saved: object) -> None:
    for key, record in saved.items():  # type: ignore[attr-defined]
        context.state[key] = record
