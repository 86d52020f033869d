"""`mlserver.codecs.lists`: helpers custom codecs use to take one string or a list of them alike."""

from __future__ import annotations

from typing import Any, Iterator, List, Type, Union

ListElement = Union[bytes, str]
ListPayload = Union[ListElement, List[ListElement]]


def is_list_of(payload: Any, instance_type: Type) -> bool:
    """True for a list whose every element is an `instance_type` (an empty list too, as MLServer)."""
    return isinstance(payload, list) and all(isinstance(item, instance_type) for item in payload)


def as_list(payload: ListPayload) -> Iterator[ListElement]:
    """The elements of a list, or a single element as a list of one."""
    if isinstance(payload, list):
        yield from payload
    else:
        yield payload


__all__ = ["ListElement", "ListPayload", "is_list_of", "as_list"]
