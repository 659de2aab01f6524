"""The worker side: an agent run as a pipeline of steps (pipeline.py, steps.py), the Celery
task that runs it (task.py), and what a `conveyor worker` process is made of."""
