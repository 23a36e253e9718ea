"""Networks. Each splits into a shared ``body`` and a personal ``head`` by parameter names."""
