"""The console's Atom feed of CAP alerts (``/cap.atom``), newest first.

Each entry carries the whole CAP ``<alert>`` as its XML content, as CAP-aware feed readers
(and the OASIS CAP feeds convention) expect; the entry's ``id`` is the alert's identifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from xml.etree import ElementTree as ET

from gatewayd.console.plans import with_default_namespace

ATOM_NS = "http://www.w3.org/2005/Atom"


class CapMessageLike(Protocol):
    """One CAP alert as the gateway sent it (``gatewayd.service.cap.CapMessage``)."""

    @property
    def identifier(self) -> str: ...
    @property
    def sent(self) -> str: ...
    @property
    def msg_type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def area(self) -> str: ...
    @property
    def xml(self) -> bytes: ...


class CapSource(Protocol):
    """What the console reads CAP alerts from (``gatewayd.service.cap.CapAlerts``)."""

    @property
    def messages(self) -> Sequence[CapMessageLike]: ...
    @property
    def public(self) -> bool: ...
    @property
    def sender(self) -> str: ...


def atom(source: CapSource, *, site: str, site_name: str, self_url: str) -> bytes:
    """The feed document: one entry per alert, each with its CAP XML inline."""
    feed = ET.Element(f"{{{ATOM_NS}}}feed")

    def add(parent: ET.Element, name: str, text: str | None = None, **attrs: str) -> ET.Element:
        child = ET.SubElement(parent, f"{{{ATOM_NS}}}{name}", attrs)
        if text is not None:
            child.text = text
        return child

    messages = list(source.messages)[::-1]
    add(feed, "id", f"urn:gatewayd:{site}:cap")
    add(feed, "title", f"{site_name}: CAP alerts")
    add(feed, "updated", messages[0].sent if messages else "1970-01-01T00:00:00+00:00")
    author = add(feed, "author")
    add(author, "name", source.sender)
    add(feed, "link", rel="self", href=self_url)
    for message in messages:
        entry = add(feed, "entry")
        add(entry, "id", f"urn:gatewayd:{site}:cap:{message.identifier}")
        title = f"{message.status} {message.msg_type}: {message.event} - {message.area}"
        add(entry, "title", title)
        add(entry, "updated", message.sent)
        content = add(entry, "content", type="text/xml")
        alert = ET.fromstring(message.xml)
        content.append(with_default_namespace(alert, alert.tag[1:].split("}")[0]))
    with_default_namespace(feed, ATOM_NS)
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))
