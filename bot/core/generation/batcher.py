"""Requests that arrive together share the generator's forward passes."""

from __future__ import annotations

import asyncio

from bot.core.generation.generator import GenerationRequest, Generator


class GenerationBatcher:
    """Requests that arrive while the generator is busy go together in its next batch.

    A lone request starts at once; under load, up to `max_batch` requests (several personas on
    one base included) share each forward pass instead of queueing one behind another.
    """

    def __init__(self, generator: Generator, executor, max_batch: int = 16):
        self.generator = generator
        self.executor = executor
        self.max_batch = max_batch
        self.pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self.draining = False

    async def submit(self, request: GenerationRequest) -> list[str]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        if not self.draining:
            self.draining = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.generator.generate_batch, [r for r, _ in batch]
                    )
                except Exception:
                    # One bad model must not fail the others: answer each request on its own.
                    results = []
                    for request, _ in batch:
                        try:
                            results.append(
                                await loop.run_in_executor(
                                    self.executor, self.generator.generate_batch, [request]
                                )
                            )
                        except Exception as exc:  # noqa: PERF203 - rare path
                            results.append(exc)
                    results = [r[0] if isinstance(r, list) else r for r in results]
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.draining = False
