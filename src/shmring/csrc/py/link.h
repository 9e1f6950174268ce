/* py/link.h - the linked-commit methods of the endpoint cores (py/link.c),
 * entered in the method tables of py/producer.c and py/consumer.c. */
#ifndef SHMRING_PY_LINK_H
#define SHMRING_PY_LINK_H

#include "py/core.h"

/* A Python int as a u64: 0, or -1 with an error set. */
int link_as_u64(PyObject *o, uint64_t *v);
/* ConsumerCore */
/* _link_take's work: 0 with the input held at *pp (*pn bytes, its link
 * header first), or -1 with an error set. */
int link_take_raw(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                  const char **pp, uint64_t *pn, uint64_t *item, uint32_t *attempts,
                  uint32_t *done);
/* A read-only view of the held input's payload (past its link header), as
 * self->view, a new reference; the view of an earlier one is dropped. */
PyObject *link_input_view(EndpointObject *in, const char *p, uint64_t n);
/* One item of a map, filter or sink stage (py/link_map.c). */
PyObject *link_map(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_take(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_finish(EndpointObject *self, PyObject *unused);
PyObject *link_many(EndpointObject *self, PyObject *unused);
/* ProducerCore */
/* Claims n payload bytes after the link header on self, linked to in's
 * input, waiting for space until deadline: 0 with *dst set, or -1. */
int link_claim_space(EndpointObject *self, EndpointObject *in, uint64_t n, uint64_t item,
                     uint64_t region, int64_t deadline, char **dst);
PyObject *link_claim(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_commit(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *link_abort(EndpointObject *self, PyObject *consumer);
PyObject *link_send(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
