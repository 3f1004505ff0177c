"""spawnwatch: catch processes that keep spawning identical children and never clean them up."""

__version__ = "0.1.0"
