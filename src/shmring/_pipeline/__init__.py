"""Pipelines: stages of worker processes joined by channels (``Pipeline``).

``stage`` declares the stages, ``pipeline`` is the public class, ``run``
starts and watches the workers, ``worker`` is a worker's loop, ``item`` the
bytes of one item, ``board`` the workers' shared status, ``order`` puts
outputs back in source order, ``stats`` the numbers ``run.stats`` shows.
"""
