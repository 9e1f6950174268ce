"""multiprocessing drop-ins: Queue, SimpleQueue, JoinableQueue."""
