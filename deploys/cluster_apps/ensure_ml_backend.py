"""Make sure every Label Studio project has the ML backend at ML_BACKEND_URL.

Shipped in a ConfigMap and run hourly by the ML-backend connector CronJob (in the Label
Studio image, which carries label-studio-sdk); the contract test runs this same file
against a real Label Studio. A project that already has the URL is left alone, and other
backends are never touched: the script only ever adds.

Environment: LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY (the admin's legacy token, from a
Secret), ML_BACKEND_URL, ML_BACKEND_TITLE. Exit status 1 when a project could not be
given the backend (the GPU service down, say), after trying every project.
"""

from __future__ import annotations

import os
import sys

from label_studio_sdk import LabelStudio


def same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def main() -> int:
    url = os.environ["ML_BACKEND_URL"]
    title = os.environ.get("ML_BACKEND_TITLE", "oceanid-gpu")
    client = LabelStudio(
        base_url=os.environ["LABEL_STUDIO_URL"], api_key=os.environ["LABEL_STUDIO_API_KEY"]
    )
    added = kept = failed = 0
    for project in client.projects.list(page_size=100):
        backends = client.ml.list(project=project.id)
        if any(same_url(backend.url or "", url) for backend in backends):
            kept += 1
            continue
        try:
            client.ml.create(project=project.id, url=url, title=title)
        except Exception as exc:  # one project's failure must not stop the others
            failed += 1
            reason = str(exc).splitlines()[0][:300]
            print(f"project {project.id}: could not add {url}: {reason}", file=sys.stderr)
            continue
        added += 1
        print(f"project {project.id}: added ML backend {url}")
    print(f"ml backend {url}: {added} added, {kept} already had it, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
