"""`thinkdraw serve-judge`: a local judge behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from thinkdraw.configs import ServeJudgeConfig


def serve_judge(config: ServeJudgeConfig) -> None:
    from thinkdraw.judges.server import serve
    from thinkdraw.judges.vlm import VLMChat
    from thinkdraw.runtime import Runtime
    from thinkdraw.world.registry import chat_judge

    runtime = Runtime.create(config.device, "auto", config.threads)
    chat = VLMChat.load(chat_judge(config.judge), device=runtime.device, max_batch=config.max_batch)
    serve(
        chat,
        host=config.host,
        port=config.port,
        model_name=config.model_name,
        max_batch=config.max_batch,
        max_queue=config.max_queue,
        log_requests=config.log_requests,
    )
