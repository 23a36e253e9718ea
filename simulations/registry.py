"""The algorithm registry: every algorithm declared once, with both halves, its sections and tasks.

An :class:`Algorithm` names its server half (a builder ``RunConfig -> Strategy`` that calls the
strategy's own Flower-style constructor), its client half (a
:class:`clients.base.ClientAlgorithm` subclass), the run-config sections it reads (settings
dataclasses, :mod:`fedpersonal.config`) and the tasks it supports. The ServerApp, the ClientApp,
the matrix runner and the tests all look algorithms up here; adding one is one entry below (see
docs/adding-an-algorithm.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Strategy

from clients.apfl import APFLClient, APFLSettings
from clients.base import ClientAlgorithm
from clients.centralized import CentralizedClient
from clients.ditto import DittoClient, DittoSettings
from clients.dua import DUAClient
from clients.face import FaceClient, FaceFineTuneClient, FaceLocalClient
from clients.fedbabu import FedBABUClient, FedBABUSettings
from clients.fedbn import FedBNClient
from clients.fedfr import FedFRClient, FedFRSettings
from clients.fedper import FedPerClient
from clients.fedprox import FedProxClient
from clients.fedrep import FedRepClient, FedRepSettings
from clients.lgfedavg import LGFedAvgClient
from clients.local import LocalOnlyClient
from clients.perfedavg import PerFedAvgClient, PerFedAvgSettings
from clients.pfedme import PFedMeClient, PFedMeSettings
from clients.scaffold import ScaffoldClient
from fedpersonal.adaptation import AdaptSettings, check_applies
from fedpersonal.adaptation.dua import DUASettings, experts_for
from fedpersonal.config import ConfigError, RunConfig, parse_config, require_choice, section_name, settings_dict
from fedpersonal.device import resolve_device
from fedpersonal.evaluation import EvaluationSettings
from fedpersonal.faults import FaultSettings
from fedpersonal.poisoning import PoisonSettings
from fedpersonal.privacy.accounting import noise_multiplier, release_plan, sampled_clients
from fedpersonal.privacy.dpsgd import DPSGDSettings, check_dpsgd
from fedpersonal.privacy.secagg import SecAggSettings, check_secagg
from fedpersonal.privacy.settings import DPSettings
from fedpersonal.tasks import TASK_SECTIONS, TASKS, get_task
from fedpersonal.tasks.face import FaceTask
from strategies.common import weighted_mean_metrics
from strategies.dp import DP_WEIGHT, PrivateAggregation, flower_wrapper
from strategies.dua import DUA
from strategies.face import FaceFedAvg, FaceLocalOnly
from strategies.fedfr import FedFR
from strategies.fedopt import FedAdagrad, FedAdam, FedAvgM, FedOptTorch, FedYogi
from strategies.fedprox import FedProx, FedProxSettings
from strategies.local import LocalOnly
from strategies.robust import RobustSettings
from strategies.scaffold import Scaffold
from strategies.server_optimizers import (
    FedAdagradSettings,
    FedAdamSettings,
    FedAvgMSettings,
    FedYogiSettings,
    TorchOptimSettings,
)

# Sections every run reads, whatever its algorithm: the tasks', local adaptation, simulated faults.
RUN_SECTIONS: tuple[type, ...] = (
    *TASK_SECTIONS,
    AdaptSettings,
    FaultSettings,
    EvaluationSettings,
    PoisonSettings,
    DPSettings,
    SecAggSettings,
    DPSGDSettings,
)
VISION = ("gaze", "classify")  # the tasks whose model trains on the task's own loss


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: ``strategy = name`` in the run config selects it."""

    name: str
    server: Callable[[RunConfig], Strategy]
    client: type[ClientAlgorithm]
    tasks: tuple[str, ...]
    sections: tuple[type, ...] = ()
    paper: str = ""
    private: bool = False  # its server half is a mean of the replies: sections dp and secagg apply
    # Its client half is the plain local SGD step (FedProx: plus its proximal term), so the vectorized
    # clients backend (simulations/vectorized.py) may train a round's clients in lockstep.
    vectorized: bool = False


def sampling(cfg: RunConfig) -> dict[str, Any]:
    """FedAvg-family keyword arguments of a run: its fractions, every client connected, our metric
    averaging (identity keys skipped)."""
    return {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": cfg.num_clients,
        "train_metrics_aggr_fn": weighted_mean_metrics,
        "evaluate_metrics_aggr_fn": weighted_mean_metrics,
    }


def private_mean(cfg: RunConfig, averaging: type[FedAvg] = FedAvg, **extra: Any) -> PrivateAggregation:
    """The uniform mean of ``averaging`` (FedAvg, FedProx) behind Flower's DP wrapper of ``dp.mode``."""
    dp = cfg.section(DPSettings)
    inner = averaging(**{**sampling(cfg), "weighted_by_key": DP_WEIGHT}, **extra)
    z = noise_multiplier(cfg)
    try:
        wrapper = flower_wrapper(inner, dp, z, sampled_clients(cfg))
    except ValueError as error:
        raise ConfigError(
            f"run config section 'dp' {settings_dict(dp)} (noise multiplier {z:.4g}) rejected by Flower's "
            f"DP wrapper: {error}"
        ) from error
    return PrivateAggregation(wrapper, release_plan(cfg), z, clip_here=not dp.client_side)


def _mean(cfg: RunConfig, averaging: type[FedAvg] = FedAvg, **extra: Any) -> Strategy:
    """FedAvg-style averaging, made differentially private when section ``dp`` says so."""
    if cfg.section(DPSettings).enabled:
        return private_mean(cfg, averaging, **extra)
    return averaging(**sampling(cfg), **extra)


def _optimizer_args(cfg: RunConfig) -> dict[str, Any]:
    """Sampling arguments of a server optimizer, the private mean it steps on under DP, its device."""
    averaging = private_mean(cfg) if cfg.section(DPSettings).enabled else None
    return {**sampling(cfg), "averaging": averaging, "device": resolve_device(cfg)}


def _fedavg(cfg: RunConfig) -> Strategy:
    return _mean(cfg)


def _fedprox(cfg: RunConfig) -> Strategy:
    return _mean(cfg, FedProx, proximal_mu=cfg.section(FedProxSettings).mu)


def _fedavgm(cfg: RunConfig) -> Strategy:
    s = cfg.section(FedAvgMSettings)
    return FedAvgM(
        server_learning_rate=s.server_lr, server_momentum=s.momentum, nesterov=s.nesterov, **_optimizer_args(cfg)
    )


def _fedadam(cfg: RunConfig) -> Strategy:
    s = cfg.section(FedAdamSettings)
    return FedAdam(
        eta=s.server_lr, beta_1=s.beta1, beta_2=s.beta2, tau=s.tau, initial_v=s.initial_v,
        bias_correction=s.bias_correction, **_optimizer_args(cfg),
    )  # fmt: skip


def _fedyogi(cfg: RunConfig) -> Strategy:
    s = cfg.section(FedYogiSettings)
    return FedYogi(
        eta=s.server_lr, beta_1=s.beta1, beta_2=s.beta2, tau=s.tau, initial_v=s.initial_v, **_optimizer_args(cfg)
    )


def _fedadagrad(cfg: RunConfig) -> Strategy:
    s = cfg.section(FedAdagradSettings)
    return FedAdagrad(eta=s.server_lr, beta_1=s.beta1, tau=s.tau, initial_v=s.initial_v, **_optimizer_args(cfg))


def _fedopt(cfg: RunConfig) -> Strategy:
    s = cfg.section(TorchOptimSettings)
    return FedOptTorch(optimizer=s.optimizer, eta=s.server_lr, options=s.options, **_optimizer_args(cfg))


def _centralized(cfg: RunConfig) -> Strategy:
    """FedAvg that samples one node per round (it trains on the pooled data; averaging one reply
    returns it unchanged)."""
    return FedAvg(**{**sampling(cfg), "fraction_train": 1e-9})


def _fedmedian(cfg: RunConfig) -> Strategy:
    return FedMedian(**sampling(cfg))


def _fedtrimmedavg(cfg: RunConfig) -> Strategy:
    return FedTrimmedAvg(beta=cfg.section(RobustSettings).beta, **sampling(cfg))


def _krum(cfg: RunConfig) -> Strategy:
    return Krum(num_malicious_nodes=cfg.section(RobustSettings).num_malicious_nodes, **sampling(cfg))


def _multikrum(cfg: RunConfig) -> Strategy:
    s = cfg.section(RobustSettings)
    return MultiKrum(
        num_malicious_nodes=s.num_malicious_nodes, num_nodes_to_select=s.num_nodes_to_select, **sampling(cfg)
    )


def _bulyan(cfg: RunConfig) -> Strategy:
    f = cfg.section(RobustSettings).num_malicious_nodes
    if cfg.num_clients < 4 * f + 3:
        raise ConfigError(
            f"run config key 'num-clients' = {cfg.num_clients} is too few for strategy 'bulyan' with "
            f"robust.num-malicious-nodes = {f}; expected at least 4 f + 3 = {4 * f + 3}"
        )
    return Bulyan(num_malicious_nodes=f, **sampling(cfg))


def _local(cfg: RunConfig) -> Strategy:
    return LocalOnly(**sampling(cfg))


def _scaffold(cfg: RunConfig) -> Strategy:
    return Scaffold(**sampling(cfg))


def _dua(cfg: RunConfig) -> Strategy:
    s = cfg.section(DUASettings)
    return DUA(experts_for(cfg), omega_norm=s.omega_norm, device=resolve_device(cfg), **sampling(cfg))


def _face(strategy: type[FaceFedAvg]) -> Callable[[RunConfig], Strategy]:
    def build(cfg: RunConfig) -> Strategy:
        return strategy(FaceTask(cfg), **sampling(cfg))

    return build


def _registry(*algorithms: Algorithm) -> dict[str, Algorithm]:
    return {algorithm.name: algorithm for algorithm in algorithms}


REDDI = "Reddi et al., Adaptive Federated Optimization, ICLR 2021"
ALGORITHMS: dict[str, Algorithm] = _registry(
    Algorithm(
        "fedavg", _fedavg, ClientAlgorithm, VISION, paper="McMahan et al., AISTATS 2017", private=True, vectorized=True
    ),
    Algorithm(
        "fedprox",
        _fedprox,
        FedProxClient,
        VISION,
        (FedProxSettings,),
        "Li et al., MLSys 2020",
        private=True,
        vectorized=True,
    ),
    Algorithm("local", _local, LocalOnlyClient, VISION, paper="reference: local training only"),
    Algorithm("centralized", _centralized, CentralizedClient, VISION, paper="reference: pooled training data"),
    Algorithm("scaffold", _scaffold, ScaffoldClient, VISION, paper="Karimireddy et al., ICML 2020"),
    Algorithm(
        "fedper",
        _fedavg,
        FedPerClient,
        VISION,
        paper="Arivazhagan et al., arXiv:1912.00818, 2019",
        private=True,
        vectorized=True,
    ),
    Algorithm("fedrep", _fedavg, FedRepClient, VISION, (FedRepSettings,), "Collins et al., ICML 2021", private=True),
    Algorithm("fedbabu", _fedavg, FedBABUClient, VISION, (FedBABUSettings,), "Oh et al., ICLR 2022", private=True),
    Algorithm("lg-fedavg", _fedavg, LGFedAvgClient, VISION, paper="Liang et al., arXiv:2001.01523, 2020", private=True),
    Algorithm("fedbn", _fedavg, FedBNClient, VISION, paper="Li et al., ICLR 2021", private=True),
    Algorithm(
        "perfedavg", _fedavg, PerFedAvgClient, VISION, (PerFedAvgSettings,), "Fallah et al., NeurIPS 2020", private=True
    ),
    Algorithm(
        "apfl", _fedavg, APFLClient, VISION, (APFLSettings,), "Deng et al., arXiv:2003.13461, 2020", private=True
    ),
    Algorithm("pfedme", _fedavg, PFedMeClient, VISION, (PFedMeSettings,), "Dinh et al., NeurIPS 2020", private=True),
    Algorithm("ditto", _fedavg, DittoClient, VISION, (DittoSettings,), "Li et al., ICML 2021", private=True),
    Algorithm("fedmedian", _fedmedian, ClientAlgorithm, VISION, paper="Yin et al., ICML 2018"),
    Algorithm("fedtrimmedavg", _fedtrimmedavg, ClientAlgorithm, VISION, (RobustSettings,), "Yin et al., ICML 2018"),
    Algorithm("krum", _krum, ClientAlgorithm, VISION, (RobustSettings,), "Blanchard et al., NeurIPS 2017"),
    Algorithm("multikrum", _multikrum, ClientAlgorithm, VISION, (RobustSettings,), "Blanchard et al., NeurIPS 2017"),
    Algorithm("bulyan", _bulyan, ClientAlgorithm, VISION, (RobustSettings,), "El Mhamdi et al., ICML 2018"),
    Algorithm(
        "fedavgm",
        _fedavgm,
        ClientAlgorithm,
        VISION,
        (FedAvgMSettings,),
        "Hsu et al., arXiv:1909.06335",
        private=True,
        vectorized=True,
    ),
    Algorithm("fedadam", _fedadam, ClientAlgorithm, VISION, (FedAdamSettings,), REDDI, private=True, vectorized=True),
    Algorithm("fedyogi", _fedyogi, ClientAlgorithm, VISION, (FedYogiSettings,), REDDI, private=True, vectorized=True),
    Algorithm(
        "fedadagrad", _fedadagrad, ClientAlgorithm, VISION, (FedAdagradSettings,), REDDI, private=True, vectorized=True
    ),
    Algorithm("fedopt", _fedopt, ClientAlgorithm, VISION, (TorchOptimSettings,), REDDI, private=True, vectorized=True),
    Algorithm("dua", _dua, DUAClient, ("classify",), (DUASettings,), "De Lange et al., CVPR 2020"),
    Algorithm("fedfr", _face(FedFR), FedFRClient, ("face",), (FedFRSettings,), "Liu et al., AAAI 2022"),
    Algorithm("face-fedavg", _face(FaceFedAvg), FaceClient, ("face",), paper="McMahan et al., AISTATS 2017"),
    Algorithm("face-finetune", _face(FaceFedAvg), FaceFineTuneClient, ("face",), paper="FedAvg + local fine-tuning"),
    Algorithm("face-local", _face(FaceLocalOnly), FaceLocalClient, ("face",), paper="local training only"),
)


def algorithm(name: str) -> Algorithm:
    """The algorithm registered as ``name``; a ConfigError on key 'strategy' names the choices."""
    require_choice("strategy", name, ALGORITHMS)
    return ALGORITHMS[name]


def all_sections() -> tuple[type, ...]:
    """Every section a run may set: :data:`RUN_SECTIONS` and every algorithm's, each once."""
    found: dict[str, type] = {section_name(cls): cls for cls in RUN_SECTIONS}
    for entry in ALGORITHMS.values():
        found.update({section_name(cls): cls for cls in entry.sections})
    return tuple(found.values())


def plain_sgd(entry: Algorithm) -> bool:
    """Whether the algorithm's local training is the base client's SGD loop on the task's loss (the
    only training section ``dpsgd`` makes DP-SGD)."""
    return entry.client.train is ClientAlgorithm.train and entry.client.local_train is ClientAlgorithm.local_train


def parse_run_config(run_config: dict[str, Any]) -> RunConfig:
    """Validate every key and section, and that the chosen algorithm supports the chosen task."""
    cfg = parse_config(run_config, all_sections())
    require_choice("task", cfg.task, TASKS)
    entry = algorithm(cfg.strategy)
    if cfg.task not in entry.tasks:
        supporting = sorted(name for name, other in ALGORITHMS.items() if cfg.task in other.tasks)
        raise ConfigError(
            f"run config key 'strategy' = {cfg.strategy!r} does not support task = {cfg.task!r} "
            f"(it supports {list(entry.tasks)}); strategies for task {cfg.task!r}: {supporting}"
        )
    check_applies(cfg.section(AdaptSettings), get_task(cfg.task, cfg))
    attack = cfg.section(PoisonSettings).attack
    if attack != "none" and (cfg.task == "face" or cfg.strategy == "dua"):
        raise ConfigError(
            f"run config key 'poison.attack' = {attack!r} is invalid with task {cfg.task!r} and strategy "
            f"{cfg.strategy!r}; poisoning applies to the model updates of tasks {list(VISION)} (not DUA's Omega)"
        )
    if cfg.section(DPSettings).enabled and not entry.private:
        private = sorted(name for name, other in ALGORITHMS.items() if other.private)
        raise ConfigError(
            f"run config key 'dp.mode' = {cfg.section(DPSettings).mode!r} is invalid with strategy {cfg.strategy!r}, "
            f"whose server does not average the updates; differential privacy applies to {private}"
        )
    check_secagg(cfg, entry.private, [name for name, other in ALGORITHMS.items() if other.private])
    if cfg.section(DPSGDSettings).enabled:
        plain = [name for name, other in ALGORITHMS.items() if plain_sgd(other) and cfg.task in other.tasks]
        check_dpsgd(cfg, plain_sgd(entry), plain, get_task(cfg.task, cfg).build_model())
    unseen = cfg.section(EvaluationSettings).unseen_clients
    if unseen and cfg.task == "face":
        raise ConfigError(
            f"run config key 'evaluate.unseen-clients' = {unseen} is invalid with task 'face', which evaluates "
            "unseen identities itself (global-unseen-* metrics); expected 0"
        )
    return cfg


def unused_keys(cfg: RunConfig) -> list[str]:
    """Keys set away from their defaults that this run's task, dataset and algorithm never read."""
    task = get_task(cfg.task, cfg)
    every_run = [cls for cls in RUN_SECTIONS if cls not in TASK_SECTIONS]
    read = {section_name(cls) for cls in every_run}
    read |= {section_name(cls) for cls in algorithm(cfg.strategy).sections}
    read |= task.sections_read()
    defaults = parse_config({}, all_sections()).to_dict()
    return sorted(
        key
        for key, value in cfg.to_dict().items()
        if value != defaults[key] and (key in task.unread_keys() or ("." in key and key.split(".")[0] not in read))
    )


def build_strategy(cfg: RunConfig) -> Strategy:
    """The server half of ``cfg.strategy``, built from ``cfg``; settings its constructor rejects
    become a ConfigError naming the algorithm's sections and their values."""
    entry = algorithm(cfg.strategy)
    try:
        return entry.server(cfg)
    except ConfigError:
        raise
    except ValueError as error:
        sections = {section_name(cls): settings_dict(cfg.section(cls)) for cls in entry.sections}
        raise ConfigError(f"run config section(s) {sections} rejected by strategy {cfg.strategy!r}: {error}") from error


def build_client(cfg: RunConfig, context: Any) -> ClientAlgorithm:
    """The client half of ``cfg.strategy`` for the node of Flower ``context``."""
    return algorithm(cfg.strategy).client(context, cfg)
