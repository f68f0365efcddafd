"""The load generator under Locust: ``options`` (the option table), ``lifecycle`` (the plugin: one per
process), ``user`` (the tab), ``sent`` (the sent ledger), ``reporting`` (statistics and the end of a run),
``greenlets`` and ``hooks`` (helpers). The locustfiles that use it are ``lossbench.scenarios``."""
