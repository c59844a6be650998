"""The HTTP face of `uniarm serve`: OpenAI's routes, its response and chunk formats, its error JSON.

Routes: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (each
streams server-sent events with `"stream": true`, ending `data: [DONE]`), and the playground at `/`.
Every refusal is OpenAI's `{"error": {"message", "type", "param", "code"}}`: 400 for bad input (the
field named in `param`), 429 with `Retry-After` when the queue is full, 500 with no detail for a bug
(the traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from uniarm_jax.errors import RequestError
from uniarm_jax.serve.requests import ChatBody, CompletionBody
from uniarm_jax.serve.scheduler import Finished, Job
from uniarm_jax.serve.service import Service
from uniarm_jax.serve.text import TextStream

log = logging.getLogger("uniarm.serve")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RETRY_AFTER_S = 1


def error_body(message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def error(status: int, message: str, kind: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param), status_code=status, headers=headers)


def _validation_message(err: dict) -> tuple[str, str | None]:
    """One pydantic error as (message, field): the field's dotted path, never the input's value."""
    if err.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'invalid')})", None
    if err.get("type") == "model_attributes_type":
        return "the request body must be a JSON object", None
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    # a union type reports each alternative by its type's name ("str", "list[...]"): not a field
    loc = [x for x in loc if not (x[:1].islower() and ("[" in x or x in ("str", "int", "float", "bool")))]
    field = ".".join(loc) or None
    return f"{field or 'body'}: {err.get('msg', 'invalid')}", field


class _Exchange:
    """One request's answer: the job's tokens turned into text, then the OpenAI object or chunks."""

    def __init__(self, service: Service, job: Job, meta: dict, chat: bool):
        self.job, self.meta, self.chat = job, meta, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.text = TextStream(service.tokenizer, meta["stops"])
        self.tokens, self.reason = 0, None

    async def deltas(self):
        """The text as it grows, then `self.reason` is set ("stop", "length"; "error" if the server
        failed the job). Stops listening (the job is freed) on a stop string."""
        while True:
            event = await self.job.events.get()
            if isinstance(event, Finished):
                self.reason = event.reason
                if event.reason != "error" and (delta := self.text.finish()):
                    yield delta
                return
            self.tokens += 1
            delta = self.text.add(event)
            if delta:
                yield delta
            if self.text.stopped:
                self.job.cancel()
                self.reason = "stop"
                return

    def usage(self) -> dict:
        p = self.meta["prompt_tokens"]
        return {"prompt_tokens": p, "completion_tokens": self.tokens, "total_tokens": p + self.tokens}

    def _choice(self, text: str) -> dict:
        """The whole response's choice; `token_ids` (an extension, as `uniarm sample` writes them) are
        the generated ids up to the end (EOS included, nothing after a stop string's token)."""
        common = {"index": 0, "logprobs": None, "finish_reason": self.reason, "token_ids": self.text.ids}
        if self.chat:
            return {**common, "message": {"role": "assistant", "content": text}}
        return {**common, "text": text}

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.meta["model"]}

    async def whole(self, request: Request) -> JSONResponse:
        watcher = asyncio.create_task(_watch_disconnect(request, self.job))
        try:
            text = "".join([d async for d in self.deltas()])
        finally:
            watcher.cancel()
            self.job.cancel()
        if self.reason == "error":
            return error(500, "the server failed this request", "server_error")
        body = {**self._head(self.object), "choices": [self._choice(text)], "usage": self.usage(),
                "preference": self.meta["preference"]}
        return JSONResponse(body)

    async def events(self, include_usage: bool):
        """Server-sent events in OpenAI's chunk format; the job is freed however the stream ends
        (a client that goes away cancels this generator)."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"

        def chunk(text, finish=None, **extra):
            if self.chat:
                choice = {"index": 0, "delta": {} if text is None else {"content": text}, "logprobs": None,
                          "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            if finish is not None:
                choice["token_ids"] = self.text.ids
            return "data: " + json.dumps({**self._head(obj), "choices": [choice], **extra}) + "\n\n"

        try:
            if self.chat:
                first = {**self._head(obj), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                         "logprobs": None, "finish_reason": None}]}
                yield "data: " + json.dumps(first) + "\n\n"
            async for delta in self.deltas():
                yield chunk(delta)
            if self.reason == "error":
                yield "data: " + json.dumps(error_body("the server failed this request", "server_error")) + "\n\n"
            else:
                yield chunk(None, self.reason, preference=self.meta["preference"])
                if include_usage:
                    yield "data: " + json.dumps({**self._head(obj), "choices": [], "usage": self.usage()}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.job.cancel()


async def _watch_disconnect(request: Request, job: Job) -> None:
    """A non-streaming request whose client goes away frees its slot too: once the body is read, the
    next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel()


def make_app(service: Service) -> FastAPI:
    app = FastAPI(title="uniarm serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        message, field = _validation_message(exc.errors()[0])
        return error(400, message, "invalid_request_error", field)

    @app.exception_handler(RequestError)
    async def refused(_, exc: RequestError):
        return error(400, str(exc), "invalid_request_error", exc.param)

    @app.exception_handler(HTTPException)
    async def http_error(_, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def bug(_, exc: Exception):
        log.error("internal error", exc_info=exc)
        return error(500, "internal server error", "server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", **service.scheduler.load()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": service.models()}

    async def answer(request: Request, job: Job, meta: dict, body, chat: bool):
        if not service.scheduler.submit(job):
            load = service.scheduler.load()
            return error(429, f"the server is busy ({load['busy']} of {load['slots']} slots decoding, "
                              f"{load['queued']} requests queued); retry after {RETRY_AFTER_S} s",
                         "rate_limit_error", headers={"Retry-After": str(RETRY_AFTER_S)})
        exchange = _Exchange(service, job, meta, chat)
        if body.stream:
            return StreamingResponse(exchange.events(body.include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await exchange.whole(request)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        job, meta = service.chat_job(body)
        return await answer(request, job, meta, body, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        job, meta = service.completion_job(body)
        return await answer(request, job, meta, body, chat=False)

    @app.get("/")
    async def playground():
        return FileResponse(os.path.join(STATIC, "index.html"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
