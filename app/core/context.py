"""What the code running for a request knows of it without being handed it: the request's id.

app/api/middleware.py sets it for every HTTP request (a sane X-Request-Id is kept, else a new one); log lines
and the events a request causes carry it. Outside a request (a background loop) it reads "-".
"""

import contextvars

REQUEST_ID = contextvars.ContextVar("request_id", default="-")
