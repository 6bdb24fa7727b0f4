"""Serial line addresses: one check for every serial driver, each mistake named."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
from gatewayd.drivers.psap_radio.config import PsapRadioConfig
from gatewayd.kernel.serialurl import check_serial_url

SCHEMES = frozenset({"socket", "loop"})


@pytest.mark.parametrize("url", ["/dev/ttyUSB0", "socket://10.0.0.5:4001", "loop://"])
def test_device_paths_and_allowed_urls_pass_unchanged(url: str) -> None:
    assert check_serial_url(url, SCHEMES) == url


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/dev/tty USB0", "contains white space"),
        ("spy:///dev/ttyS0", "URL scheme 'spy' is not one of loop://, socket://"),
        ("socket://10.0.0.5", "needs a host and a port"),
        ("socket://:4001", "needs a host and a port"),
        ("socket://10.0.0.5:port", "needs a host and a port"),
    ],
)
def test_each_bad_address_is_refused_naming_why(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        check_serial_url(url, SCHEMES)


@pytest.mark.parametrize("model", [PsapRadioConfig, OsdpReaderConfig])
def test_both_serial_drivers_refuse_a_bad_url_the_same_way(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError, match="needs a host and a port"):
        model.model_validate({"id": "x", "driver": "x", "url": "socket://nowhere"})
