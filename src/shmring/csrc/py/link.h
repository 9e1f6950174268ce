/* py/link.h - the linked-commit methods of the endpoint cores (py/link.c),
 * entered in the method tables of py/producer.c and py/consumer.c. */
#ifndef SHMRING_PY_LINK_H
#define SHMRING_PY_LINK_H

#include "py/core.h"

/* ConsumerCore */
PyObject *link_take(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_finish(EndpointObject *self, PyObject *unused);
PyObject *link_many(EndpointObject *self, PyObject *unused);
/* ProducerCore */
PyObject *link_claim(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_commit(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_abort(EndpointObject *self, PyObject *consumer);
PyObject *link_send(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
