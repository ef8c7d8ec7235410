"""What every family's loader shares: reading a config (object, model or raw ``config.json`` dict)
and loading a checkpoint's processors, offline-tolerant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def config_value(config: Any, *path: str, default: Any = None) -> Any:
    """``config.a.b`` (or ``config["a"]["b"]``) for a config object, a model (its config) or a raw dict; `default`
    when any step is missing or None."""
    node = getattr(config, "config", config)  # a model: its config
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else getattr(node, key, None)
        if node is None:
            return default
    return node


def load_processors(source: str, revision: str | None, image_processor_class: Any,
                    fits: Callable[[Any], bool] = lambda processor: hasattr(processor, "tokenizer")) -> tuple[Any, Any]:
    """(full processor or None, image processor or None) of a checkpoint.

    The full processor counts only when `fits` accepts it: the tokenizer may not load
    offline, and where a checkpoint ships no tokenizer files transformers may build an
    empty one rather than fail, so a family checks that it spells the model's image ids.
    Without it, the image processor alone (the caller lays out the tokens).
    """
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, revision=revision)
        if hasattr(processor, "image_processor") and fits(processor):
            return processor, processor.image_processor
        logger.info("the processor of %s has no tokenizer for its image ids; using its image processor", source)
    except Exception as exc:  # noqa: BLE001 - no tokenizer files, offline, any loader error: the image processor
        logger.info("full processor of %s not loadable (%s: %s); using its image processor", source,
                    type(exc).__name__, exc)
    try:
        return None, image_processor_class.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        logger.info("no image processor config in %s (%s)", source, exc)
        return None, None
