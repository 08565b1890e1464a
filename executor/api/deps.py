"""What routes are given: the engine, the serving state, and a watch on their client."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from executor.api.serving import Serving
from executor.engine_api import Engine


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


EngineDep = Annotated[Engine, Depends(get_engine)]
ServingDep = Annotated[Serving, Depends(get_serving)]


class Watch:
    """Whether the client is gone, asked while no response has started. Once a stream has
    started, Starlette notices the disconnect itself (and closes the stream, which cancels
    the generation), so the watch stops asking."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.active = True

    def streaming(self) -> None:
        self.active = False

    async def gone(self) -> bool:
        return self.active and await self.request.is_disconnected()
