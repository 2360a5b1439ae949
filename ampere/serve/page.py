"""The search page: pick an indexed item or upload a photo or clip, see the top-k of every other
domain as thumbnails with product id, domain and score. Server-rendered HTML, no script."""

from __future__ import annotations

from html import escape
from typing import Any

from ampere.retrieval.index_store import IndexSnapshot
from ampere.serve.models import ServedModel

PICKS_PER_DOMAIN = 8

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
header { display: flex; gap: 2em; align-items: baseline; flex-wrap: wrap; }
.small { color: #666; font-size: 0.85em; }
.row { display: flex; gap: 0.8em; flex-wrap: wrap; margin: 0.4em 0 1.2em; }
.card { width: 150px; font-size: 0.8em; text-decoration: none; color: inherit; border: 1px solid #ddd; padding: 4px; }
.card img { width: 150px; height: 150px; object-fit: cover; display: block; background: #eee; }
.card.same { border: 2px solid #2a7; }
.query { border: 2px solid #27a; }
section { margin-bottom: 1em; }
.error { color: #b00; font-weight: bold; }
"""


def _card(item_id: str, product_id: str, domain: str, thumbnail: str, caption: str, classes: str = "card") -> str:
    return (
        f'<a class="{classes}" href="/?item={escape(item_id)}" data-item="{escape(item_id)}">'
        f'<img src="{escape(thumbnail)}" alt="{escape(item_id)}">'
        f"<div><b>{escape(product_id)}</b> · {escape(domain)}</div><div>{escape(caption)}</div></a>"
    )


def _picks(snapshot: IndexSnapshot) -> str:
    rows = []
    for domain, gallery in snapshot.domains.items():
        table = gallery.ids.head(PICKS_PER_DOMAIN)
        cards = "".join(
            _card(item_id, product_id, domain, f"/items/{item_id}/thumbnail", item_id)
            for item_id, product_id in zip(table["item_id"], table["product_id"], strict=True)
        )
        rows.append(f'<h3>{escape(domain)}</h3><div class="row picks">{cards}</div>')
    return "".join(rows)


def _results(result: dict[str, Any]) -> str:
    query = result["query"]
    if query["item_id"] is not None:
        thumbnail = f"/items/{query['item_id']}/thumbnail"
        label = query["item_id"]
    else:
        thumbnail = query.get("preview") or ""
        label = "uploaded " + query["domain"]
    product = next((hit["product_id"] for hits in result["results"].values() for hit in hits), None)
    sections = [
        '<section><h2>Query</h2><div class="row">'
        + _card(query["item_id"] or "", "query", query["domain"], thumbnail, label, "card query")
        + "</div></section>"
    ]
    for domain, hits in result["results"].items():
        if domain == query["domain"]:
            continue
        cards = "".join(
            _card(
                hit["item_id"],
                hit["product_id"],
                domain,
                hit["thumbnail"],
                f"score {hit['score']:.3f}",
                "card result same" if query["item_id"] and hit["product_id"] == product else "card result",
            )
            for hit in hits
        )
        sections.append(f'<section><h2>Top {len(hits)} in {escape(domain)}</h2><div class="row results">{cards}</div></section>')
    return "".join(sections)


def render(snapshot: IndexSnapshot, model: ServedModel, result: dict[str, Any] | None, k: int, error: str = "") -> str:
    """The whole page: what is served, the upload form, the results (if any) or why the query was
    refused, and items to pick."""
    served = (
        f'<span class="small">index {escape(snapshot.index_id)} · model v{escape(model.version)} · '
        f"text source {escape(str(model.lineage.get('text_source')))}</span>"
    )
    upload = (
        '<form method="post" action="/" enctype="multipart/form-data">'
        '<input type="file" name="file" accept="image/*,video/*" required> '
        '<select name="domain"><option value="">domain: from the file</option>'
        '<option>page</option><option>short</option><option>live</option></select> '
        '<input type="text" name="text" placeholder="title or transcript (optional)" size="40"> '
        f'<input type="hidden" name="k" value="{k}"><button type="submit">Search</button></form>'
    )
    body = _results(result) if result is not None else ""
    if error:
        body = f'<p class="error">Query refused: {escape(error)}</p>'

    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>AMPere search</title>"
        f"<style>{STYLE}</style></head><body><header><h1>AMPere search</h1>{served}</header>"
        f"{upload}{body}<h2>Pick a query item</h2>{_picks(snapshot)}</body></html>"
    )
