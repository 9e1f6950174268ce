"""Request/response over channels: a reply by correlation id.

A client (``requester.Requester``) owns a private reply channel and sends
each request, with that channel's name and an id, into the service's request
channel; a server (``responder.Responder``) takes requests from there and
answers on the channel each one names (``request.Request``). ``wire`` holds
the record shapes, the channel names and the small opening helpers both
sides share.
"""

from .request import Request
from .requester import Requester
from .responder import Responder

__all__ = ["Request", "Requester", "Responder"]
