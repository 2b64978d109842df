"""The API reference at `/docs`: Swagger UI from the installed `swagger-ui-bundle` package,
served by this server, so it works on a machine without internet (FastAPI's default page
loads its scripts from a CDN)."""

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS = f"{DOCS_PATH}/assets"


def mount_api_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and its files under `/docs/assets/`; create the app with
    `docs_url=None, redoc_url=None` so FastAPI adds no CDN-loading pages of its own."""

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="api-docs-assets")
