"""The web dashboard: a static page at `/` that talks to the `/v1` API from the browser.

The server renders nothing and holds no session: the page asks for an API key, keeps
it in the tab's `sessionStorage` and sends it as a Bearer header, so it sees exactly
what that key's tenant sees over HTTP. Scripts, styles and the charting library
(uPlot, vendored in `static/vendor/`) come from this origin only; the
Content-Security-Policy forbids inline script and any other origin.
"""

from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import FileResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/dashboard"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new release must not run against a page cached from the previous one.
    "Cache-Control": "no-cache",
}


class _DashboardFiles(StaticFiles):
    """The page's static files, each answered with the security headers."""

    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


async def _index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


async def _sign_in_hint(request: Request) -> JSONResponse:
    """Where this server wrote its local API key, for the sign-in form (null where it keeps
    none: a production server creates no local key)."""
    settings = request.app.state.services.settings
    path = settings.local_key_path if settings.create_local_key else None
    return JSONResponse({"local_key_file": str(path) if path is not None else None}, headers=SECURITY_HEADERS)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at `/` and its files under `/dashboard/` (not in the OpenAPI schema)."""
    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{STATIC_PATH}/sign-in.json", _sign_in_hint, methods=["GET"], include_in_schema=False)
    app.mount(STATIC_PATH, _DashboardFiles(directory=STATIC_DIR), name="dashboard")
