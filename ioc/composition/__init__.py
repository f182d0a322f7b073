"""The composition: the ``ioc`` CLI and the jobs that wire the layers together.

Everything here may import ``streams``, ``sensors_sim``, ``dashboards`` and ``detectors``; nothing
below may import this package (the import-linter contract in ``pyproject.toml`` holds it). The
foundation it builds on stays in ``ioc`` itself: settings, wire formats, domain, storage, stack.
"""
