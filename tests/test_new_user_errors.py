"""Error messages a new user met in the warehouse trial (issue 15 item 5): each says what is
wrong and a fix that is really a fix."""

from __future__ import annotations

import pytest

from mycelium_mono import U64, MessageBus, MessageHandler, handles, message, routing_config


@message(type_id=5321, topic="errors_test")
class Crate:
    crate_id: U64


class AuditLog:
    @handles(Crate)
    def on_crate(self, crate: Crate) -> None:
        pass


class Loader(MessageHandler[Crate]):
    def handle(self, crate: Crate) -> None:
        pass


@routing_config
class CrateBus:
    Crate = [AuditLog, Loader]


def test_a_wrong_service_names_its_class_with_the_right_article() -> None:
    with pytest.raises(TypeError, match="'audit_log' must be an AuditLog instance, got Loader"):
        CrateBus(audit_log=Loader(), loader=Loader())  # type: ignore[arg-type]


def test_a_wrong_service_before_a_consonant_keeps_a() -> None:
    with pytest.raises(TypeError, match="'loader' must be a Loader instance, got AuditLog"):
        CrateBus(audit_log=AuditLog(), loader=AuditLog())  # type: ignore[arg-type]


def test_emitting_a_non_message_does_not_suggest_routing_it() -> None:
    bus = CrateBus(audit_log=AuditLog(), loader=Loader())
    with pytest.raises(TypeError) as caught:
        bus.emit("crate 7")
    text = str(caught.value)
    assert "help: emit a @message instance; a str is not a message class" in text
    assert "str = [...]" not in text


def test_publishing_a_non_message_does_not_suggest_a_publisher_for_it() -> None:
    bus = MessageBus()
    with pytest.raises(TypeError) as caught:
        bus.publisher(Crate).publish_nowait("crate 7")  # type: ignore[arg-type]
    text = str(caught.value)
    assert "help: publish a Crate(...) instance; a str is not a @message class" in text
    assert "bus.publisher(str)" not in text


def test_a_publisher_for_a_class_that_is_not_a_message_is_refused() -> None:
    with pytest.raises(TypeError, match=r"str is not a @message class[^\n]*\nhelp: decorate"):
        MessageBus().publisher(str)


def test_subscribing_to_a_class_that_is_not_a_message_is_refused() -> None:
    with pytest.raises(TypeError, match="Loader is not a @message class"):
        MessageBus().subscribe(Loader)
