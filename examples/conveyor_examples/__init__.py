"""Example agents for conveyor, registered through the `conveyor.agents` entry point.

The package is installed with conveyor (`pip install -e .`, which `./dev` runs) and its
entry point `examples = "conveyor_examples.agents"` in pyproject.toml makes every worker and
client know these agents, the way any plugin package would:

- `examples.ingest` (pool `vector`): embeds and indexes stdlib docstrings in a collection;
- `examples.research` (pool `io`, async): hybrid search over the collection and the session's
  memory, an extractive answer (pluggable: `set_composer`, an LLM call awaited on the loop),
  remembered in the session;
- `examples.fetch` (pool `io`, async): simulated I/O awaited concurrently;
- `examples.flaky` (pool `default`): fails transiently, then succeeds on a retry.
"""

from conveyor_examples.agents import Answer, Composer, Source, set_composer

__all__ = ["Answer", "Composer", "Source", "set_composer"]
