"""Make sure every Label Studio project has the ML backend at ML_BACKEND_URL, with basic auth.

Shipped in a ConfigMap and run hourly by the ML-backend connector CronJob (in the Label
Studio image, which carries label-studio-sdk); the contract test runs this same file
against a real Label Studio and the real adapter (deploys/gpu_host/ml_backend/adapter.py).

Our registration is the project's backend titled ML_BACKEND_TITLE (or at ML_BACKEND_URL):
- none: it is added (auth_method BASIC_AUTH with ML_BACKEND_USER / ML_BACKEND_PASSWORD);
- its URL, auth method or user differ, or Label Studio cannot reach it with what it holds
  (the password is write-only in Label Studio's API, so a changed password shows as a
  registration that is no longer connected): it is updated, URL and credentials together;
- otherwise it is left alone. Backends with another title and URL are never touched.

Label Studio checks a backend before saving it (ml/serializers.py: /health, then /setup), so
a refusal carries its reason, printed with the project's id and title. Environment:
LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY (the admin's legacy token), ML_BACKEND_URL,
ML_BACKEND_TITLE, ML_BACKEND_USER, ML_BACKEND_PASSWORD (the last three from a Secret). Exit
status 1 when a project could not be given the backend, after trying every project; 2 when
the environment is incomplete.
"""

from __future__ import annotations

import os
import sys

from label_studio_sdk import LabelStudio

BASIC_AUTH = "BASIC_AUTH"  # ml/models.py MLBackendAuth
CONNECTED = "CO"  # ml/models.py MLBackendState


def same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def reason(exc: Exception) -> str:
    """The first line of Label Studio's answer: the SDK's ApiError keeps the body."""
    body = getattr(exc, "body", None)
    text = str(body) if body else str(exc)
    return " ".join(text.split())[:400]


def main() -> int:
    missing = [
        name
        for name in (
            "LABEL_STUDIO_URL",
            "LABEL_STUDIO_API_KEY",
            "ML_BACKEND_URL",
            "ML_BACKEND_USER",
            "ML_BACKEND_PASSWORD",
        )
        if not os.environ.get(name)
    ]
    if missing:
        print(f"missing environment: {', '.join(missing)}", file=sys.stderr)
        return 2
    url = os.environ["ML_BACKEND_URL"]
    title = os.environ.get("ML_BACKEND_TITLE", "oceanid-gpu")
    auth = {
        "auth_method": BASIC_AUTH,
        "basic_auth_user": os.environ["ML_BACKEND_USER"],
        "basic_auth_pass": os.environ["ML_BACKEND_PASSWORD"],
    }
    client = LabelStudio(
        base_url=os.environ["LABEL_STUDIO_URL"], api_key=os.environ["LABEL_STUDIO_API_KEY"]
    )
    added = updated = kept = failed = 0
    for project in client.projects.list(page_size=100):
        name = f"project {project.id} ({project.title!r})"
        try:
            listed = client.ml.list(project=project.id)
        except Exception as exc:
            failed += 1
            print(f"{name}: cannot list its ML backends: {reason(exc)}", file=sys.stderr)
            continue
        ours = [
            backend
            for backend in listed
            if backend.title == title or same_url(backend.url or "", url)
        ]
        current = ours[0] if ours else None
        if (
            current is not None
            and same_url(current.url or "", url)
            and current.auth_method == BASIC_AUTH
            and current.basic_auth_user == auth["basic_auth_user"]
            and current.state == CONNECTED
        ):
            kept += 1
            continue
        try:
            if current is not None:
                # url and project go along: Label Studio re-checks /health and /setup with
                # them (MLBackendSerializer.validate), even on a partial update
                client.ml.update(current.id, project=project.id, url=url, title=title, **auth)
            else:
                client.ml.create(project=project.id, url=url, title=title, **auth)
        except Exception as exc:  # one project's failure must not stop the others
            failed += 1
            verb = "add" if current is None else "update"
            print(f"{name}: Label Studio refused to {verb} {url}: {reason(exc)}", file=sys.stderr)
            continue
        if current is not None:
            updated += 1
            print(f"{name}: updated ML backend {current.id} to {url}")
        else:
            added += 1
            print(f"{name}: added ML backend {url}")
    print(
        f"ml backend {url}: {added} added, {updated} updated, {kept} already had it, "
        f"{failed} failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
