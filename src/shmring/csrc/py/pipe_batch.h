/* py/pipe_batch.h - a pipeline parent's batched sends and receives of plain
 * values (py/pipe_batch.c), entered in the method tables of py/producer.c
 * and py/consumer.c. */
#ifndef SHMRING_PY_PIPE_BATCH_H
#define SHMRING_PY_PIPE_BATCH_H

#include "py/core.h"

/* ProducerCore._send_items(iterator, first, max_n) -> (sent, obj, exhausted) */
PyObject *pipe_send_items(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
/* ConsumerCore._recv_values(max_n, max_bytes) -> list */
PyObject *pipe_recv_values(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
