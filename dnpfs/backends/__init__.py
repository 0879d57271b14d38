"""Where records live.  ``base`` is the store contract (and its optional
capabilities); ``memory`` is its reference, ``sqlite`` the embedded default
and ``kafka`` the distributed one."""
