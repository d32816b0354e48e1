"""One judge from one string: a server's url, a local folder, or a hub id.

The same string works wherever a judge is asked for (rewards, verifiers, the evaluator):

    load_judge("http://127.0.0.1:8000")          # ChatJudge over HTTPChat: vLLM, or `thinkdraw serve-judge`
    load_judge("runs/judge", device="cuda")      # ChatJudge over VLMChat: a transformers VLM on this machine
    load_judge("Qwen/Qwen2.5-VL-3B-Instruct")
"""

from __future__ import annotations

from thinkdraw.judges.chat import ChatJudge
from thinkdraw.judges.http import HTTPChat


def load_judge(spec: str, device: str = "cpu") -> ChatJudge:
    """An http(s):// url -> ChatJudge(HTTPChat(url)); anything else -> ChatJudge(VLMChat.load(spec, device))."""
    if spec.strip().lower().startswith(("http://", "https://")):
        return ChatJudge(HTTPChat(spec.strip()))
    from thinkdraw.judges.vlm import VLMChat  # torch and transformers load only when a local judge is asked for

    return ChatJudge(VLMChat.load(spec, device=device))
