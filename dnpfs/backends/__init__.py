"""Where records live.  ``base.Backend`` is the whole interface; ``sqlite`` is
the embedded default and ``kafka`` the distributed one."""
