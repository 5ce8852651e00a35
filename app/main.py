"""The application: routes, middleware, offline docs and the one error envelope; the lifespan (app/lifespan.py)
wires the store, the runner, the services and the background loops."""

import sys
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import metrics
from app.api.errors import install_error_handlers
from app.api.middleware import Metrics, RequestMiddleware
from app.api.security import GuardMiddleware
from app.budget import router as budget
from app.config import Settings, load_settings
from app.instances import router as instances
from app.instances.schemas import Health
from app.inventory import router as inventory
from app.lifespan import lifespan
from app.notifications import router as notifications
from app.schedules import router as schedules
from app.ui import budget as ui_budget
from app.ui import create, instance
from app.ui import router as ui
from app.ui.deps import LoginRequired
from app.ui.views import Outcomes, RowsCache


class QuietStartupExit:
    """Pure ASGI: a SystemExit with a message raised while the app starts (a database of a newer version, a
    public --host without a token) ends the start with that message on stderr, without the traceback that
    Starlette attaches to a failed startup (uvicorn would print it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                stop = sys.exc_info()[1]  # Starlette sends this from the `except` that caught it
                if isinstance(stop, SystemExit) and isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr, flush=True)
                    message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, quiet_send)


def create_app(settings_getter: Callable[[], Settings] = load_settings) -> FastAPI:
    """The app; tests in process pass their own settings and override the dependencies in deps.py."""
    app = FastAPIOffline(
        title="EC2 Creator Local",
        version="1.0.0",
        description="Provision and manage free-tier EC2 instances through AWS CLI scripts. "
                    "Reads come from the local record; a background reconciler keeps it in step with EC2.\n\n"
                    "**Tokens** apply only when the server has `API_TOKEN` or `API_TOKENS_FILE` set: then every "
                    "route with a lock needs `Authorization: Bearer <token>` (*Authorize* takes it). Without "
                    "either, the server serves loopback only and no route needs a token: ignore the locks.\n\n"
                    "**Errors** have one shape, `{\"detail\": \"<what to do>\", \"code\": \"<machine code>\"}`; "
                    "each error status below lists its codes.",
        lifespan=lifespan,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.state.metrics = Metrics()
    app.add_middleware(GuardMiddleware, settings_getter=settings_getter)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics,  # outermost: every answer counted
                       sandbox=lambda: settings_getter().ec2_target == "sandbox")
    app.add_middleware(QuietStartupExit)  # lifespan only
    app.include_router(instances.router)
    app.include_router(budget.router)
    app.include_router(notifications.router)
    app.include_router(schedules.router)
    app.include_router(inventory.router)
    app.include_router(metrics.router)
    app.include_router(ui.router)  # the dashboard's pages (not in the API's schema), and / -> /ui
    app.include_router(instance.router)
    app.include_router(ui_budget.router)
    app.include_router(create.router)
    app.mount("/ui/static", StaticFiles(directory=ui.HERE / "static"), name="ui-static")
    app.add_exception_handler(LoginRequired, ui.login_required)  # type: ignore[arg-type]
    app.state.ui_outcomes = Outcomes()
    app.state.ui_rows = RowsCache()

    @app.get("/health", response_model=Health, tags=["health"])
    async def health() -> dict:
        """Liveness: answers at once, never calls AWS."""
        return {"status": "ok"}

    return app


# Checked when uvicorn imports this module, before it starts the app: a bad setting ends the process with one
# line per problem on stderr (exit 1), not a traceback out of the lifespan. The lifespan reuses the result.
load_settings()
app = create_app()
