"""Labelled web pages for benchmarks/warc.py: real text whose main part is known, wrapped in
the boilerplate real sites put around it, and written as a crawler writes a WARC.

Main text: the lead of an English Wikipedia article (../shared/data/pretrain/enwiki.jsonl.zst),
whole paragraphs up to a length drawn log-uniformly from 40 to 2,000 words, with its section
headings. That text, and nothing else, is the page's reference. The article title is
shown as the page's <h1> but is not in the reference (extractors disagree on whether a
title is body text; it is a few words per page either way).

Boilerplate, five site layouts (WordPress blog, news site, wiki, 1990s table layout,
div-soup "bootstrap" page), each with what such sites carry: navigation, breadcrumbs,
cookie banner, ad slots between paragraphs, share buttons, tags, related-article teasers
(other articles' titles and first sentences: real prose that is not this page's text),
reader comments (paragraphs from public-domain books, ../shared/data/pretrain/books.jsonl.zst:
the hardest boilerplate, prose like the main text), sidebars, newsletter boxes, footers.

Bytes on the wire: HTTP bodies sent as identity, gzip, deflate, br, zstd, chunked and
chunked + gzip; charsets UTF-8 (declared in the header, only in <meta>, or not at all) and
windows-1252 / ISO-8859-1 (characters they lack written as &#NNNN; references, as such
sites do). Each page is a request + response pair; a warcinfo record starts the file, and
image and CSS responses are mixed in, as in a real crawl.
"""
from __future__ import annotations

import gzip
import html
import io
import json
import math
import random
import re
import zlib
from pathlib import Path

import zstandard

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"
e = html.escape
LAYOUTS = ("wordpress", "news", "wiki", "table", "divsoup")
ENCODINGS = ("identity", "gzip", "deflate", "br", "zstd", "chunked", "chunked+gzip")
ENCODING_WEIGHTS = (2, 4, 1, 2, 1, 1, 2)
CHARSETS = ("utf-8:header", "utf-8:meta", "utf-8:none", "windows-1252:header", "iso-8859-1:meta")

NAV = ["Home", "News", "World", "Politics", "Business", "Science", "Technology", "Health", "Sports",
       "Culture", "Opinion", "Travel", "Books", "Video", "Podcasts", "About", "Contact", "Subscribe"]
COOKIE = [
    "We use cookies and similar technologies to improve your experience, analyse traffic and "
    "personalise ads. By clicking Accept all you agree to our use of cookies. Manage preferences",
    "This website stores cookies on your computer. These cookies are used to collect information "
    "about how you interact with our website and allow us to remember you. Accept Decline",
    "Your privacy matters. We and our 143 partners store and access information on your device. "
    "You can change your choices at any time in Privacy settings. Agree Disagree",
]
NEWSLETTER = [
    "Get the best stories in your inbox every morning. Sign up for our free daily newsletter. "
    "Enter your email address Subscribe. You can unsubscribe at any time.",
    "Never miss an update! Join 25,000 readers and get new posts delivered straight to your inbox.",
]
SHARE = "Share this: Facebook Twitter LinkedIn Pinterest Email Print"
FOOTER = ["Privacy Policy", "Terms of Use", "Cookie Settings", "Accessibility", "Sitemap", "Careers",
          "Advertise with us", "Contact us", "Help", "RSS"]
AUTHORS = ["Jane Miller", "Tom Becker", "Ana Souza", "Kenji Watanabe", "Priya Raman", "Luca Moretti",
           "Sarah O'Neill", "David Kim", "Marta Nowak", "Olivier Dubois"]
COMMENTERS = ["mike_77", "Helen R.", "anonymous", "bookworm", "J. Carter", "roadrunner", "Nadia", "oldtimer"]


def _stream_jsonl_zst(path: Path):
    with open(path, "rb") as f:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        for line in reader:
            yield json.loads(line)


def load_sources(n_articles: int, seed: int) -> tuple[list[dict], list[str]]:
    """Articles (title, blocks [(kind, text)]) with at least 60 words, and book paragraphs."""
    articles = []
    for d in _stream_jsonl_zst(SHARED / "enwiki.jsonl.zst"):
        lines = [ln.strip() for ln in d["text"].split("\n")]
        title, body = lines[0], [ln for ln in lines[1:] if ln]
        blocks = [("h2", ln[:-1]) if _is_heading(ln) else ("p", ln) for ln in body]
        if sum(len(t.split()) for k, t in blocks if k == "p") >= 60:
            articles.append({"title": title, "blocks": blocks})
        if len(articles) >= n_articles * 2:
            break
    random.Random(seed).shuffle(articles)
    paras = []
    for d in _stream_jsonl_zst(SHARED / "books.jsonl.zst"):
        for p in re.split(r"\n\s*\n", d["text"]):
            p = " ".join(p.split())
            if 12 <= len(p.split()) <= 90 and not p.isupper():
                paras.append(p)
        if len(paras) >= max(2000, 40 * n_articles):  # enough for 8 comments a page, in both splits
            break
    random.Random(seed + 1).shuffle(paras)
    return articles[:n_articles], paras


def _is_heading(line: str) -> bool:
    # WikiExtractor writes a section title as a short line ending in "." with no other sentence in it
    return line.endswith(".") and len(line.split()) <= 8 and line.count(".") == 1 and line[0].isupper()


def main_blocks(article: dict, rng: random.Random) -> list[tuple[str, str]]:
    target = math.exp(rng.uniform(math.log(40), math.log(2000)))
    out, words = [], 0
    for kind, text in article["blocks"]:
        if words >= target and kind == "p":
            break
        out.append((kind, text))
        words += len(text.split()) if kind == "p" else 0
    while out and out[-1][0] == "h2":  # a heading with no paragraph after it is not kept
        out.pop()
    return out


def reference_text(blocks: list[tuple[str, str]]) -> str:
    return "\n".join(t for _, t in blocks)


def _links(items, cls="") -> str:
    return "".join(f'<li class="{cls}"><a href="/{i.lower().replace(" ", "-")}">{e(i)}</a></li>' for i in items)


def _teasers(others: list[dict], n: int) -> list[tuple[str, str]]:
    out = []
    for a in others[:n]:
        first = next(t for k, t in a["blocks"] if k == "p")
        out.append((a["title"], first.split(". ")[0] + "."))
    return out


def _comments(paras: list[str], rng: random.Random, n: int, tag="div") -> str:
    out = []
    for i in range(n):
        who, day = rng.choice(COMMENTERS), rng.randint(1, 28)
        out.append(f'<li class="comment" id="comment-{rng.randint(1000, 99999)}"><{tag} class="comment-body">'
                   f'<div class="comment-author vcard"><b class="fn">{e(who)}</b> <span class="says">says:</span></div>'
                   f'<div class="comment-metadata"><time>March {day}, 2021 at {rng.randint(1, 12)}:{rng.randint(10, 59)} pm</time></div>'
                   f'<div class="comment-content"><p>{e(paras[i % len(paras)])}</p></div>'
                   f'<div class="reply"><a class="comment-reply-link" href="#">Reply</a></div></{tag}></li>')
    return "".join(out)


def _body_html(blocks, rng, ad_every=0, ad_html="", edit_links=False, plain_br=False) -> str:
    out, n_p = [], 0
    for kind, text in blocks:
        if kind == "h2":
            edit = '<span class="mw-editsection">[<a href="#">edit</a>]</span>' if edit_links else ""
            out.append(f'<h2><span class="mw-headline">{e(text)}</span>{edit}</h2>' if not plain_br
                       else f"<br><b>{e(text)}</b><br>")
        else:
            out.append(f"{e(text)}<br><br>" if plain_br else f"<p>{e(text)}</p>")
            n_p += 1
            if ad_every and n_p % ad_every == 0:
                out.append(ad_html)
    return "\n".join(out)


def page_html(article, blocks, others, paras, rng, layout) -> str:
    """One page of `layout` around `blocks` (the main text); encode_page adds the charset."""
    title, site = article["title"], rng.choice(["The Daily Ledger", "Northwind Post", "Field Notes",
                                                "OpenEncyclopedia", "Curious Minds", "The Archive Weekly"])
    nav = rng.sample(NAV, rng.randint(6, 12))
    teasers = _teasers(others, rng.randint(3, 6))
    n_comments = rng.choice([0, 0, 1, 2, 3, 5, 8])
    cookie = rng.choice(COOKIE) if rng.random() < 0.6 else ""
    year = rng.randint(2009, 2024)
    head = f"<head><title>{e(title)} | {e(site)}</title><meta name=\"viewport\" content=\"width=device-width\">" \
           f"<link rel=\"stylesheet\" href=\"/style.css\"><script>window.dataLayer=[];function gtag(){{}}</script></head>"
    teaser_html = "".join(f'<li><a href="/a/{i}"><h3>{e(t)}</h3></a><p class="excerpt">{e(x)}</p></li>'
                          for i, (t, x) in enumerate(teasers))
    cookie_html = (f'<div id="cookie-notice" class="cookie-banner" role="dialog"><p>{e(cookie)}</p>'
                   f'<button>Accept all</button><button>Reject</button></div>') if cookie else ""
    foot = " | ".join(rng.sample(FOOTER, 6))
    author = rng.choice(AUTHORS)
    if layout == "wordpress":
        body = f"""<body class="post-template-default single single-post">{cookie_html}
<div id="page" class="site"><a class="skip-link screen-reader-text" href="#content">Skip to content</a>
<header id="masthead" class="site-header"><div class="site-branding"><p class="site-title"><a href="/">{e(site)}</a></p>
<p class="site-description">Thoughts on history, science and everything in between</p></div>
<nav id="site-navigation" class="main-navigation"><button class="menu-toggle">Menu</button><ul id="primary-menu" class="menu">{_links(nav, "menu-item")}</ul></nav></header>
<div id="content" class="site-content"><div id="primary" class="content-area"><main id="main" class="site-main">
<article class="post type-post status-publish hentry"><header class="entry-header"><h1 class="entry-title">{e(title)}</h1>
<div class="entry-meta"><span class="posted-on">Posted on <time class="entry-date published">May {rng.randint(1, 28)}, {year}</time></span>
<span class="byline"> by <span class="author vcard"><a class="url fn n" href="/author/">{e(author)}</a></span></span></div></header>
<div class="entry-content">{_body_html(blocks, rng)}</div>
<footer class="entry-footer"><div class="sharedaddy"><h3 class="sd-title">{SHARE.split(':')[0]}:</h3>{SHARE.split(':')[1]}</div>
<span class="cat-links">Posted in <a href="/c/">{e(rng.choice(nav))}</a></span> <span class="tags-links">Tagged <a href="/t/">{e(title.split()[0].lower())}</a>, <a href="/t/">history</a></span></footer></article>
<nav class="navigation post-navigation"><h2 class="screen-reader-text">Post navigation</h2><div class="nav-links">
<div class="nav-previous"><a href="/p/">Previous Post {e(teasers[0][0])}</a></div><div class="nav-next"><a href="/n/">Next Post {e(teasers[1][0])}</a></div></div></nav>
<div id="comments" class="comments-area">{f'<h2 class="comments-title">{n_comments} thoughts on &ldquo;{e(title)}&rdquo;</h2><ol class="comment-list">{_comments(paras, rng, n_comments, "article")}</ol>' if n_comments else ''}
<div id="respond" class="comment-respond"><h3 id="reply-title" class="comment-reply-title">Leave a Reply</h3>
<form class="comment-form"><p class="comment-notes">Your email address will not be published. Required fields are marked *</p>
<p>Comment <textarea name="comment"></textarea></p><p>Name * <input name="author"></p><p><input type="submit" value="Post Comment"></p></form></div></div>
</main></div><aside id="secondary" class="widget-area"><section class="widget widget_search"><form role="search"><label>Search for:<input type="search"></label><input type="submit" value="Search"></form></section>
<section class="widget widget_recent_entries"><h2 class="widget-title">Recent Posts</h2><ul>{teaser_html}</ul></section>
<section class="widget widget_archive"><h2 class="widget-title">Archives</h2><ul>{_links([f"{m} {year}" for m in ("January", "February", "March", "April")])}</ul></section>
<section class="widget"><h2 class="widget-title">Newsletter</h2><p>{e(rng.choice(NEWSLETTER))}</p></section></aside></div>
<footer id="colophon" class="site-footer"><div class="site-info">&copy; {year} {e(site)}. Proudly powered by WordPress | Theme: Twenty Nineteen. {e(foot)}</div></footer></div></body>"""
    elif layout == "news":
        ad = (f'<div class="ad-slot ad-inline" data-ad="mid"><span class="ad-label">Advertisement</span>'
              f'<a href="/sponsored"><p>Sponsored: {e(rng.choice(teasers)[0])} &mdash; what experts don\'t tell you</p></a></div>')
        body = f"""<body>{cookie_html}<div class="top-bar"><a href="/login">Log in</a> <a href="/subscribe">Subscribe for $1</a> <span>Today's paper</span></div>
<header class="masthead"><a class="logo" href="/">{e(site)}</a><nav class="sections"><ul>{_links(nav)}</ul></nav>
<div class="ticker"><b>Breaking:</b> {e(teasers[-1][0])} &middot; {e(teasers[0][0])}</div></header>
<div class="container"><div class="row"><div class="col-main"><div class="breadcrumb"><a href="/">Home</a> &rsaquo; <a href="/s">{e(nav[1])}</a></div>
<h1 class="headline">{e(title)}</h1><div class="byline">By <a href="/by">{e(author)}</a>, Staff writer &middot; Updated {rng.randint(1, 12)}:{rng.randint(10, 59)} AM, June {rng.randint(1, 28)}, {year}</div>
<div class="share-tools">{SHARE}</div><figure class="lead-image"><img src="/img/lead.jpg" alt="{e(title)}, file photo"></figure>
<div class="article-body" itemprop="articleBody">{_body_html(blocks, rng, ad_every=rng.choice([2, 3, 4]), ad_html=ad)}</div>
<div class="newsletter-box"><h3>Sign up</h3><p>{e(rng.choice(NEWSLETTER))}</p></div>
<section class="related"><h2>More from {e(site)}</h2><ul>{teaser_html}</ul></section>
{f'<section class="comments"><h2>Comments ({n_comments})</h2><ul>{_comments(paras, rng, n_comments)}</ul></section>' if n_comments else ''}</div>
<aside class="col-side"><div class="ad-slot"><span>Advertisement</span></div><h2>Most read</h2><ol>{"".join(f"<li><a href='/m'>{e(t)}</a></li>" for t, _ in teasers)}</ol></aside></div></div>
<footer class="site-footer"><ul>{_links(FOOTER)}</ul><p>&copy; {year} {e(site)} Media Group. All rights reserved.</p></footer></body>"""
    elif layout == "wiki":
        toc = "".join(f'<li class="toclevel-1"><a href="#s{i}"><span class="tocnumber">{i + 1}</span> <span class="toctext">{e(t)}</span></a></li>'
                      for i, (k, t) in enumerate(b for b in blocks if b[0] == "h2"))
        see = "".join(f"<li><a href='/wiki/x'>{e(t)}</a></li>" for t, _ in teasers)
        body = f"""<body class="mediawiki skin-vector"><div id="mw-page-base"></div><div id="content" class="mw-body" role="main">
<div id="siteNotice">{e(cookie) if cookie else ''}</div><h1 id="firstHeading" class="firstHeading">{e(title)}</h1>
<div id="bodyContent" class="vector-body"><div id="siteSub">From {e(site)}, the free encyclopedia</div>
<div id="jump-to-nav"></div><a class="mw-jump-link" href="#mw-head">Jump to navigation</a> <a class="mw-jump-link" href="#searchInput">Jump to search</a>
<div id="mw-content-text" class="mw-body-content"><div class="mw-parser-output">
<div class="hatnote">For other uses, see <a href="/wiki/d">{e(title)} (disambiguation)</a>.</div>
{f'<div id="toc" class="toc"><div class="toctitle"><h2>Contents</h2></div><ul>{toc}</ul></div>' if toc else ''}
{_body_html(blocks, rng, edit_links=True)}
<h2><span class="mw-headline">See also</span></h2><ul>{see}</ul>
<div class="navbox"><table><tr><th>{e(nav[0])} topics</th><td>{" &middot; ".join(e(t) for t, _ in teasers)}</td></tr></table></div></div></div>
<div id="catlinks" class="catlinks">Categories: <a href="/c">{e(title.split()[0])}</a> | <a href="/c">Articles with short description</a></div></div></div>
<div id="mw-navigation"><h2>Navigation menu</h2><div id="p-personal"><ul><li>Not logged in</li><li>Talk</li><li>Contributions</li><li>Create account</li><li>Log in</li></ul></div>
<div id="left-navigation"><ul><li>Article</li><li>Talk</li></ul></div><div id="right-navigation"><ul><li>Read</li><li>Edit</li><li>View history</li></ul></div>
<div id="mw-panel"><ul>{_links(["Main page", "Contents", "Current events", "Random article", "About", "Contact us", "Donate"])}</ul>
<h3>Tools</h3><ul>{_links(["What links here", "Related changes", "Upload file", "Special pages", "Permanent link", "Cite this page"])}</ul></div></div>
<div id="footer"><ul><li>This page was last edited on {rng.randint(1, 28)} March {year}, at {rng.randint(10, 23)}:{rng.randint(10, 59)}.</li>
<li>Text is available under the Creative Commons Attribution-ShareAlike License; additional terms may apply.</li></ul><ul>{_links(FOOTER[:5])}</ul></div></body>"""
    elif layout == "table":
        body = f"""<body bgcolor="#FFFFFF"><center><table width="780" border="0" cellpadding="0"><tr><td colspan="3"><img src="/banner.gif" alt="{e(site)} banner"><br>
<font size="2">{" | ".join(f"<a href='/{n.lower()}.html'>{e(n)}</a>" for n in nav)}</font></td></tr>
<tr><td width="150" valign="top" bgcolor="#EEEEEE"><font size="2"><b>Links</b><br>{"<br>".join(f"<a href='/l{i}.html'>{e(t)}</a>" for i, (t, _) in enumerate(teasers))}
<br><br><b>Webring</b><br><a href="/prev">&lt;&lt; Prev</a> | <a href="/next">Next &gt;&gt;</a></font></td>
<td width="480" valign="top"><font face="Verdana" size="2"><font size="4"><b>{e(title)}</b></font><br><br>
{_body_html(blocks, rng, plain_br=True)}</font></td>
<td width="150" valign="top"><font size="1">Advertisement<br><a href="/ad"><img src="/ad.gif" alt="Click here"></a><br><br>{e(rng.choice(NEWSLETTER))}</font></td></tr>
<tr><td colspan="3" align="center"><font size="1">&copy; {year} {e(site)} &middot; {e(foot)} &middot; You are visitor number {rng.randint(10000, 999999)} &middot; Best viewed in 800x600</font></td></tr></table></center></body>"""
    else:  # divsoup: framework classes only, no semantic tags or telling class names
        body = f"""<body><div id="app"><div class="x1a">{cookie_html}</div><div class="container-fluid bg-dark"><div class="row"><div class="col-3"><a href="/">{e(site)}</a></div>
<div class="col-9 text-right">{" ".join(f"<a class='px-2' href='/{n.lower()}'>{e(n)}</a>" for n in nav)}</div></div></div>
<div class="container mt-4"><div class="row"><div class="col-md-8"><div class="card"><div class="card-body">
<div class="h1 mb-2">{e(title)}</div><div class="text-muted small">{e(author)} &middot; {rng.randint(2, 15)} min read</div>
<div class="mt-3">{"".join(f'<div class="mb-3 fw-bold">{e(t)}</div>' if k == "h2" else f'<div class="mb-3">{e(t)}</div>' for k, t in blocks)}</div>
<div class="d-flex">{" ".join(f"<span class='badge'>{s}</span>" for s in SHARE.split(": ")[1].split())}</div></div></div>
{f'<div class="card mt-3"><div class="card-body"><div class="h5">{n_comments} Responses</div>{"".join(f"<div class=border-top><div class=small>{e(rng.choice(COMMENTERS))}</div><div>{e(paras[i % len(paras)])}</div></div>" for i in range(n_comments))}</div></div>' if n_comments else ''}
</div><div class="col-md-4"><div class="card"><div class="card-body"><div class="h5">You may also like</div>{"".join(f"<div class=py-2><a href='/r'>{e(t)}</a><div class=small>{e(x)}</div></div>" for t, x in teasers)}</div></div>
<div class="card mt-3"><div class="card-body">{e(rng.choice(NEWSLETTER))}</div></div></div></div></div>
<div class="container-fluid bg-light py-4 mt-4"><div class="row"><div class="col">{" &middot; ".join(e(f) for f in FOOTER)}</div><div class="col">&copy; {year} {e(site)}</div></div></div></div></body>"""
    return f"<!DOCTYPE html>\n<html lang=\"en\">{head}\n{body}</html>\n"


def encode_page(page: str, charset_mode: str) -> tuple[bytes, str, str]:
    """(body bytes, Content-Type header value, the <meta> tag to put in <head>)."""
    charset, where = charset_mode.split(":")
    meta = f'<meta charset="{charset}">' if where == "meta" else \
        f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">' if where == "header" else ""
    ctype = f"text/html; charset={charset}" if where == "header" else "text/html"
    page = page.replace("<head>", "<head>" + meta, 1)
    return page.encode(charset, errors="xmlcharrefreplace"), ctype, meta


def _chunked(b: bytes, rng: random.Random) -> bytes:
    out, i = [], 0
    while i < len(b):
        n = rng.randint(200, 8192)
        out.append(b"%x\r\n" % len(b[i:i + n]) + b[i:i + n] + b"\r\n")
        i += n
    return b"".join(out) + b"0\r\n\r\n"


def http_body(raw: bytes, encoding: str, rng: random.Random) -> tuple[bytes, list[tuple[str, str]]]:
    import brotli

    headers = []
    if encoding in ("gzip", "chunked+gzip"):
        raw = gzip.compress(raw, mtime=0)
        headers.append(("Content-Encoding", "gzip"))
    elif encoding == "deflate":
        raw = zlib.compress(raw)
        headers.append(("Content-Encoding", "deflate"))
    elif encoding == "br":
        raw = brotli.compress(raw)
        headers.append(("Content-Encoding", "br"))
    elif encoding == "zstd":
        raw = zstandard.ZstdCompressor().compress(raw)
        headers.append(("Content-Encoding", "zstd"))
    if encoding.startswith("chunked"):
        raw = _chunked(raw, rng)
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Content-Length", str(len(raw))))
    return raw, headers


def write_split(path: Path, articles: list[dict], paras: list[str], seed: int) -> list[dict]:
    """Write the WARC of one split; returns each page's url, reference text and conditions."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng = random.Random(seed)
    pages = []
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "benchmarks/warc_pages.py (warcio)",
                                                            "format": "WARC File Format 1.1"}))
        for i, art in enumerate(articles):
            blocks = main_blocks(art, rng)
            others = rng.sample(articles[:i] + articles[i + 1:], min(8, len(articles) - 1))
            layout, enc = LAYOUTS[i % len(LAYOUTS)], rng.choices(ENCODINGS, ENCODING_WEIGHTS)[0]
            charset_mode = CHARSETS[(i // len(LAYOUTS)) % len(CHARSETS)]
            comments = rng.sample(paras, 8)
            page = page_html(art, blocks, others, comments, rng, layout)
            raw, ctype, _ = encode_page(page, charset_mode)
            body, enc_headers = http_body(raw, enc, rng)
            host = f"site{i % 17}.example"
            url = f"https://{host}/{i}/{re.sub(r'[^a-z0-9]+', '-', art['title'].lower()).strip('-')}"
            req = StatusAndHeaders(f"GET {url[len('https://') + len(host):]} HTTP/1.1",
                                   [("Host", host), ("User-Agent", "Mozilla/5.0 (compatible; fmforge-bench)"),
                                    ("Accept-Encoding", "gzip, deflate, br, zstd")], is_http_request=True)
            w.write_record(w.create_warc_record(url, "request", http_headers=req))
            resp = StatusAndHeaders("200 OK", [("Server", "nginx"), ("Date", "Mon, 05 Apr 2021 10:00:00 GMT"),
                                               ("Content-Type", ctype), ("Cache-Control", "max-age=600"),
                                               ("Vary", "Accept-Encoding"), *enc_headers], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=resp))
            if i % 4 == 0:  # the page's assets, as a crawler fetching them writes them
                for ext, ct, data in (("jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + rng.randbytes(3000)),
                                      ("css", "text/css", b"body{margin:0;font-family:sans-serif}" * 40)):
                    asset = StatusAndHeaders("200 OK", [("Content-Type", ct), ("Content-Length", str(len(data)))],
                                             protocol="HTTP/1.1")
                    w.write_record(w.create_warc_record(f"https://{host}/static/{i}.{ext}", "response",
                                                        payload=io.BytesIO(data), http_headers=asset))
            pages.append({"url": url, "reference": reference_text(blocks), "layout": layout,
                          "encoding": enc, "charset": charset_mode})
    return pages
