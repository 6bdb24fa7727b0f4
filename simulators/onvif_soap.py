"""SOAP 1.2 plumbing for the ONVIF camera simulator: envelopes, faults, WS-Security, times.

Replies are built as text with the ONVIF namespaces declared once on the envelope; requests
are parsed with lxml. Kept apart from the device logic so that module reads as behaviour.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

from lxml import etree

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
NS = {
    "env": SOAP_ENV,
    "wsse": WSSE,
    "wsu": WSU,
    "ter": "http://www.onvif.org/ver10/error",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tns1": "http://www.onvif.org/ver10/topics",
    "wsrf-rw": "http://docs.oasis-open.org/wsrf/rw-2",
}
CONTENT_TYPE = "application/soap+xml"
#: Accepted clock difference between a UsernameToken's Created and our clock.
MAX_SKEW_S = 300
_DECLS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


class SoapError(Exception):
    """A request the device answers with a SOAP fault."""

    def __init__(self, subcode: str, reason: str, *, sender: bool = True) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.sender = sender


@dataclass(frozen=True)
class Request:
    """One parsed SOAP request: the body's first element and the security header."""

    operation: str
    body: etree._Element
    header: etree._Element | None

    def text(self, local_name: str) -> str:
        """Text of the first descendant of the body called ``local_name`` ("" if none)."""
        found = self.body.xpath(f".//*[local-name()='{local_name}']")
        if isinstance(found, list) and found and isinstance(found[0], etree._Element):
            return (found[0].text or "").strip()
        return ""


def parse_request(raw: bytes) -> Request:
    """Parse a SOAP 1.2 envelope; raise SoapError for anything that is not one."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise SoapError("ter:WellFormed", f"not XML: {exc}") from exc
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapError("ter:WellFormed", "not a SOAP 1.2 envelope")
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None or len(body) == 0:
        raise SoapError("ter:WellFormed", "empty SOAP body")
    first = body[0]
    return Request(etree.QName(first).localname, first, root.find(f"{{{SOAP_ENV}}}Header"))


def envelope(body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {_DECLS}>'
        f"<env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def fault(error: SoapError) -> bytes:
    code = "env:Sender" if error.sender else "env:Receiver"
    return envelope(
        f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode>"
        f"<env:Value>{error.subcode}</env:Value></env:Subcode></env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{escape(error.reason)}</env:Text></env:Reason>'
        "</env:Fault>"
    )


def check_username_token(request: Request, username: str, password: str) -> None:
    """Verify a WS-Security UsernameToken (digest or text); raise NotAuthorized if wrong."""
    refused = SoapError("ter:NotAuthorized", "Sender not authorized")
    if request.header is None:
        raise refused
    token = request.header.find(f"{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if token is None:
        raise refused
    user = token.findtext(f"{{{WSSE}}}Username") or ""
    pw_node = token.find(f"{{{WSSE}}}Password")
    nonce_b64 = token.findtext(f"{{{WSSE}}}Nonce") or ""
    created = token.findtext(f"{{{WSU}}}Created") or ""
    if pw_node is None or user != username:
        raise refused
    given = (pw_node.text or "").strip()
    if pw_node.get("Type", DIGEST_TYPE) == DIGEST_TYPE:
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
        except ValueError as exc:
            raise refused from exc
        expected = base64.b64encode(
            hashlib.sha1(nonce + created.encode() + password.encode()).digest()
        ).decode()
        if given != expected or not _fresh(created):
            raise refused
    elif given != password:
        raise refused


def _fresh(created: str) -> bool:
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return abs((utcnow() - when).total_seconds()) <= MAX_SKEW_S


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_duration_s(text: str) -> float:
    """Seconds in an xs:duration such as ``PT10S`` or ``PT0.500000S``."""
    match = _DURATION.match(text.strip())
    if match is None or text.strip() in ("P", "PT"):
        raise SoapError("ter:InvalidArgVal", f"bad duration {text!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def parse_termination_s(text: str, default_s: float) -> float:
    """Seconds from now of a termination time given as a duration or an absolute time."""
    text = text.strip()
    if not text:
        return default_s
    if text.startswith("P"):
        return parse_duration_s(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SoapError("ter:InvalidArgVal", f"bad termination time {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - utcnow()).total_seconds()
