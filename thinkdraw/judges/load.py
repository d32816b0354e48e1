"""One judge from one string: a server's url, a local folder, or a hub id.

The same string works wherever a judge is asked for (rewards, verifiers, the evaluator):

    load_judge("http://127.0.0.1:8000")          # ChatJudge over HTTPChat: vLLM, or `thinkdraw serve-judge`
    load_judge("runs/judge", device="cuda")      # ChatJudge over VLMChat: a transformers VLM on this machine
    load_judge("Qwen/Qwen2.5-VL-3B-Instruct")

An environment can name judges of its own (`named`): a name maps to a folder, or to a function of the device
that builds a judge which is not a chat model (the world's rule judge over its learned detector).
"""

from __future__ import annotations

from collections.abc import Mapping

from thinkdraw.judges.base import Judge
from thinkdraw.judges.chat import ChatJudge
from thinkdraw.judges.http import HTTPChat


def load_judge(spec: str, device: str = "cpu") -> ChatJudge:
    """An http(s):// url -> ChatJudge(HTTPChat(url)); anything else -> ChatJudge(VLMChat.load(spec, device))."""
    if spec.strip().lower().startswith(("http://", "https://")):
        return ChatJudge(HTTPChat(spec.strip()))
    from thinkdraw.judges.vlm import VLMChat  # torch and transformers load only when a local judge is asked for

    return ChatJudge(VLMChat.load(spec, device=device))


def resolve_judge(spec: str, named: Mapping[str, object] | None = None, device: str = "cpu") -> Judge:
    """The judge `named[spec]` (a folder, or a function of the device that builds one), else load_judge(spec)."""
    found = (named or {}).get(spec, spec)
    return found(device) if callable(found) else load_judge(str(found), device=device)
