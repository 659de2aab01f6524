"""Optional Celery overrides, applied on top of what conveyor derives from CONVEYOR_* settings.

conveyor imports a module named `celeryconfig` from the import path (the working directory
when you run `conveyor`) and lets every lowercase setting here override its own. Anything in
https://docs.celeryq.dev/en/stable/userguide/configuration.html may go here.

Two things are refused at start-up, whatever this file says:
- pickle in any serializer or accept_content (JSON only on the wire);
- a Redis visibility_timeout that is not larger than the largest agent hard time limit.

Secrets (passwords in URLs) belong in the environment, never in this file.
"""

# Result retention in the Celery result backend; agent_runs in PostgreSQL keeps the history.
# result_expires = 86400

# Sign messages (needs the `auth` serializer and keys from the environment).
# task_serializer = "auth"
# security_key = os.environ["CONVEYOR_SIGNING_KEY"]

# Redis broker transport options (visibility_timeout in seconds).
# broker_transport_options = {"visibility_timeout": 7200}

# Worker logging.
# worker_log_format = "%(asctime)s %(levelname)s %(processName)s %(message)s"
