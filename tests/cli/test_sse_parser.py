"""`parse_sse`: the text/event-stream rules the client relies on."""

from trajx.client.sse import ServerSentEvent, parse_sse


def test_messages_comments_multiline_data_and_ids():
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 3", "event: progress", "data: {\"a\":", "data:1}", "",
             "data: no id or type", "", "id: 4", "event: ignored without data", "", "id: bad\0id", "data: x", ""]
    assert list(parse_sse(lines)) == [
        ServerSentEvent("progress", "{\"a\":\n1}", "3"),
        ServerSentEvent("message", "no id or type", "3"),  # the last id carries over, as in a browser
        ServerSentEvent("message", "x", "4"),  # an id with NUL is ignored
    ]


def test_an_unterminated_message_is_not_dispatched():
    assert list(parse_sse(["id: 1", "data: half"])) == []
