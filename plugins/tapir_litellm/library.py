"""litellm, imported once: offline (its local price map), quiet, with its
own retries off (the backend retries). Every module of the plugin that
calls litellm gets it from :func:`import_litellm`."""

from __future__ import annotations

import logging
import os
import warnings

_litellm = None


def import_litellm():
    """Import litellm once, offline and quiet, with its own retries off."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_LOG", "ERROR")
        import litellm

        litellm.suppress_debug_info = True
        litellm.set_verbose = False
        litellm.num_retries = 0
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # litellm's typed dicts make pydantic warn on first use; not actionable for our users.
        warnings.filterwarnings("ignore", message=r".*using the `ReadOnly` qualifier.*", category=UserWarning)
        _litellm = litellm
    return _litellm
