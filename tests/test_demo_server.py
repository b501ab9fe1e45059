"""The demo's loopback server: real HTTP on 127.0.0.1, checked with httpx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from pipeline.demo_server import (
    ATOM_TYPE,
    HTML_TYPE,
    RSS_TYPE,
    DemoSite,
    Resource,
    is_not_modified,
    load_outlets,
    serve_demo,
    substitute_base,
    url_path_of,
)
from pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    with serve_demo() as running:
        yield running


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def test_site_lists_outlets_with_real_urls(site: DemoSite) -> None:
    assert site.base_url.startswith("http://127.0.0.1:")
    assert len(site.outlets) >= 5
    langs = [outlet.lang for outlet in site.outlets]
    assert langs.count("de") >= 2
    assert langs.count("en") >= 3
    for outlet in site.outlets:
        assert outlet.homepage.startswith(site.base_url + "/")
        assert outlet.feed_urls
        assert all(url.startswith(site.base_url + "/") for url in outlet.feed_urls)
        assert all(a.url.startswith(site.base_url + "/") for a in outlet.articles)
        assert all(a.published.tzinfo is UTC for a in outlet.articles)


def test_every_feed_homepage_and_article_is_served(site: DemoSite, client: httpx.Client) -> None:
    seen_types = set()
    for outlet in site.outlets:
        home = client.get(outlet.homepage)
        assert home.status_code == 200
        assert home.headers["content-type"] == HTML_TYPE
        for url in outlet.feed_urls:
            feed = client.get(url)
            assert feed.status_code == 200, url
            assert feed.headers["content-type"] in {RSS_TYPE, ATOM_TYPE}
            seen_types.add(feed.headers["content-type"])
        for article in outlet.articles:
            page = client.get(article.url)
            assert page.status_code == 200, article.url
            assert page.headers["content-type"] == HTML_TYPE
    assert seen_types == {RSS_TYPE, ATOM_TYPE}


def test_placeholder_is_substituted(site: DemoSite, client: httpx.Client) -> None:
    feed = client.get(site.outlets[0].feed_urls[0])
    assert "{base}" not in feed.text
    assert site.base_url + "/" in feed.text
    article = site.outlets[0].articles[0]
    page = client.get(article.url)
    assert "{base}" not in page.text
    assert f'<link rel="canonical" href="{article.url}">' in page.text


def test_validators_and_304_on_revalidation(site: DemoSite, client: httpx.Client) -> None:
    url = site.outlets[0].feed_urls[0]
    first = client.get(url)
    etag = first.headers["etag"]
    last_modified = first.headers["last-modified"]
    assert etag.startswith('"') and etag.endswith('"')

    by_etag = client.get(url, headers={"If-None-Match": etag})
    assert by_etag.status_code == 304
    assert by_etag.content == b""
    assert by_etag.headers["etag"] == etag

    weak_in_list = client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak_in_list.status_code == 304

    by_date = client.get(url, headers={"If-Modified-Since": last_modified})
    assert by_date.status_code == 304

    changed = client.get(url, headers={"If-None-Match": '"stale"'})
    assert changed.status_code == 200
    assert changed.content == first.content

    earlier = datetime.now(UTC) - timedelta(days=3650)
    old = client.get(url, headers={"If-Modified-Since": format_datetime(earlier, usegmt=True)})
    assert old.status_code == 200

    # If-None-Match wins over If-Modified-Since.
    both = client.get(url, headers={"If-None-Match": '"stale"', "If-Modified-Since": last_modified})
    assert both.status_code == 200


def test_head_has_headers_but_no_body(site: DemoSite, client: httpx.Client) -> None:
    url = site.outlets[0].articles[0].url
    response = client.head(url)
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 1000
    assert "etag" in response.headers


def test_unknown_paths_are_404(site: DemoSite, client: httpx.Client) -> None:
    assert client.get(site.url("/nope.html")).status_code == 404
    assert client.get(site.url("/techblick/2025/06/missing.html")).status_code == 404
    # the manifest is data for the demo, not part of any site
    assert client.get(site.url("/outlets.toml")).status_code == 404


def test_robots_txt_allows_everything(site: DemoSite, client: httpx.Client) -> None:
    robots = client.get(site.url("/robots.txt"))
    assert robots.status_code == 200
    assert robots.headers["content-type"].startswith("text/plain")
    lines = robots.text.splitlines()
    assert "User-agent: *" in lines
    assert not any(line.startswith("Disallow:") and line != "Disallow:" for line in lines)


def test_directory_without_slash_redirects(site: DemoSite, client: httpx.Client) -> None:
    response = client.get(site.url("/techblick"))
    assert response.status_code == 301
    assert response.headers["location"] == "/techblick/"


def test_server_stops_on_exit(client: httpx.Client) -> None:
    with serve_demo() as running:
        url = running.outlets[0].feed_urls[0]
        assert client.get(url).status_code == 200
    with pytest.raises(httpx.ConnectError):
        client.get(url)


def test_serves_another_root(tmp_path: Path, client: httpx.Client) -> None:
    (tmp_path / "outlets.toml").write_text(
        '[[outlet]]\nname = "mini.example"\nlang = "en"\nhomepage = "/mini/"\n'
        'feeds = ["/mini/feed.xml"]\n\n[[outlet.article]]\npath = "/mini/a.html"\n'
        'story = "s"\npublished = "2025-06-01T10:00:00+00:00"\nsource = "test"\n',
        encoding="utf-8",
    )
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "feed.xml").write_text(
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>m</title>'
        '<link href="{base}/mini/a.html"/></feed>',
        encoding="utf-8",
    )
    (tmp_path / "mini" / "a.html").write_text("<html><body>hello</body></html>", "utf-8")
    with serve_demo(tmp_path) as running:
        (outlet,) = running.outlets
        assert outlet.name == "mini.example"
        assert outlet.feed_urls == (running.base_url + "/mini/feed.xml",)
        feed = client.get(outlet.feed_urls[0])
        assert feed.headers["content-type"] == ATOM_TYPE
        assert f'href="{running.base_url}/mini/a.html"' in feed.text
        assert client.get(outlet.articles[0].url).text == "<html><body>hello</body></html>"


def test_bad_manifest_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "outlets.toml").write_text('[[outlet]]\nname = "x"\n', encoding="utf-8")
    with (
        pytest.raises(ConfigError, match=r"outlets\.toml: outlet\[0\]: feeds"),
        serve_demo(tmp_path),
    ):
        pass


# ------------------------------------------------------------------ pure helpers


def _resource(etag: str = '"abc"') -> Resource:
    return Resource(b"x", HTML_TYPE, etag, datetime(2025, 6, 13, 12, 0, tzinfo=UTC))


def test_is_not_modified() -> None:
    r = _resource()
    assert not is_not_modified(r, if_none_match=None, if_modified_since=None)
    assert is_not_modified(r, if_none_match='"abc"', if_modified_since=None)
    assert is_not_modified(r, if_none_match="*", if_modified_since=None)
    assert not is_not_modified(r, if_none_match='"abd"', if_modified_since=None)
    at = "Fri, 13 Jun 2025 12:00:00 GMT"
    assert is_not_modified(r, if_none_match=None, if_modified_since=at)
    before = "Fri, 13 Jun 2025 11:59:59 GMT"
    assert not is_not_modified(r, if_none_match=None, if_modified_since=before)
    assert not is_not_modified(r, if_none_match=None, if_modified_since="yesterday")


def test_substitute_base_and_paths(tmp_path: Path) -> None:
    raw = b'<a href="{base}/x/">{base}</a>'
    assert substitute_base(raw, "http://127.0.0.1:9/") == (
        b'<a href="http://127.0.0.1:9/x/">http://127.0.0.1:9</a>'
    )
    assert url_path_of(tmp_path, tmp_path / "a" / "index.html") == "/a/"
    assert url_path_of(tmp_path, tmp_path / "index.html") == "/"
    assert url_path_of(tmp_path, tmp_path / "a" / "b.xml") == "/a/b.xml"


def test_load_outlets_resolves_against_base() -> None:
    from pipeline.demo_server import DEMO_DATA_DIR

    outlets = load_outlets(DEMO_DATA_DIR, "http://127.0.0.1:1234")
    names = [o.name for o in outlets]
    assert len(names) == len(set(names))
    assert all(o.homepage.startswith("http://127.0.0.1:1234/") for o in outlets)
