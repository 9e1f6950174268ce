"""The ``shmring`` command: inventory (ls, inspect, gc), supervisor, demo, bench."""
