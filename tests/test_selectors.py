"""Tests of orchestrator.selectors: label and field selector parsing, matching and errors."""

from __future__ import annotations

import pytest

from orchestrator.selectors import (
    EVERYTHING,
    NOTHING,
    SelectorError,
    check_field_selector,
    matches_fields,
    matches_labels,
    matches_map_selector,
    object_fields,
    parse_field_selector,
    parse_label_selector,
    selector_from_object,
    selector_to_string,
    supported_fields,
)

LABELS = {"app": "web", "tier": "front", "env": "prod", "weight": "7"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=api", False),
        ("app!=api", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("tier in (front,back)", True),
        ("tier in (back)", False),
        ("tier notin (back)", True),
        ("tier notin (front)", False),
        ("missing notin (x)", True),
        ("missing in (x)", False),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app = web , tier in ( front , back ),!missing", True),
        ("weight>5", True),
        ("weight<5", False),
        ("missing>1", False),
        ("env in (prod,staging),app", True),
    ],
)
def test_label_selector_matching(text, expected):
    assert parse_label_selector(text).matches(LABELS) is expected


def test_in_values_may_be_empty_strings():
    assert parse_label_selector("x in (,a)").matches({"x": ""})
    assert parse_label_selector("x=").matches({"x": ""})
    assert not parse_label_selector("x=").matches({})


def test_keywords_as_values_and_prefixed_keys():
    assert parse_label_selector("example.com/role in (in,notin)").matches({"example.com/role": "in"})
    assert parse_label_selector("app.kubernetes.io/name=web").matches({"app.kubernetes.io/name": "web"})


def test_canonical_string_is_sorted_by_key():
    selector = parse_label_selector("tier in (b,a),app=web,!x")
    assert str(selector) == "app=web,tier in (a,b),!x"
    assert str(parse_label_selector("a==b")) == "a==b"


_NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("=b", "found '=', expected: !, identifier, or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
        ("a (b)", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
        ("a@b=c", 'unable to parse requirement: <nil>: Invalid value: "a@b": ' + _NAME_PART),
        ("a=b@", 'unable to parse requirement: values[0][a]: Invalid value: "b@": ' + _LABEL_VALUE),
        (
            "a>b",
            (
                "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, "
                "the value must be an integer"
            ),
        ),
    ],
)
def test_label_selector_syntax_errors(text, message):
    with pytest.raises(SelectorError) as err:
        parse_label_selector(text)
    assert str(err.value) == message


def test_selector_from_object():
    sel = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "weight", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert matches_labels(sel, LABELS)
    assert not matches_labels(sel, {**LABELS, "legacy": "1"})
    assert not matches_labels(sel, {**LABELS, "env": "dev"})
    assert not matches_labels(sel, {"app": "web"})
    assert selector_to_string(sel) == "app=web,env notin (dev),!legacy,tier in (back,front),weight"


def test_nil_selects_nothing_and_empty_selects_everything():
    assert selector_from_object(None) == NOTHING
    assert not matches_labels(None, LABELS)
    assert selector_from_object({}) == EVERYTHING
    assert matches_labels({}, {}) and matches_labels({"matchLabels": {}}, LABELS)
    assert EVERYTHING.empty and not NOTHING.empty


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            '"Equals" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist',
        ),
        ({"matchLabels": {"bad key": "x"}}, 'key: Invalid value: "bad key": ' + _NAME_PART),
    ],
)
def test_selector_object_errors(selector, message):
    with pytest.raises(SelectorError) as err:
        selector_from_object(selector)
    assert str(err.value) == message


def test_service_map_selector():
    assert matches_map_selector({"app": "web"}, LABELS)
    assert not matches_map_selector({"app": "api"}, LABELS)
    assert not matches_map_selector({}, LABELS), "a service without selector selects no pods"


# --------------------------------------------------------------------------------------------
# Field selectors
# --------------------------------------------------------------------------------------------

POD = {
    "metadata": {"name": "web-1", "namespace": "shop"},
    "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler"},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}]},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("metadata.name=web-1", True),
        ("metadata.name==web-1", True),
        ("metadata.name!=web-1", False),
        ("spec.nodeName=node-a,status.phase=Running", True),
        ("spec.nodeName=", False),
        ("spec.nodeName!=", True),
        ("status.phase!=Pending,metadata.namespace=shop", True),
        ("status.podIP=10.1.0.5", True),
        ("spec.hostNetwork=false", True),
    ],
)
def test_field_selector_matching(text, expected):
    selector = parse_field_selector(text)
    check_field_selector("pods", selector)
    assert matches_fields("Pod", selector, POD) is expected


def test_unscheduled_pods_query():
    # The scheduler's own query: pods without a node.
    selector = parse_field_selector("spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed")
    pending = {"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}}
    assert matches_fields("Pod", selector, pending)
    assert not matches_fields("Pod", selector, POD)
    assert selector.value_for("spec.nodeName") == ""


def test_field_selector_escapes():
    selector = parse_field_selector(r"metadata.name=a\,b\=c\\d")
    assert selector.requirements[0].value == "a,b=c\\d"
    assert str(selector) == r"metadata.name=a\,b\=c\\d"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("a=b=c", "invalid field selector: unescaped character in value: ="),
        (r"a=b\x", "invalid field selector: invalid escape sequence: \\x"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_field_selector_syntax_errors(text, message):
    with pytest.raises(SelectorError) as err:
        parse_field_selector(text)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("kind", "field", "ok"),
    [
        ("pods", "spec.nodeName", True),
        ("Pod", "status.phase", True),
        ("Pod", "spec.containers", False),
        ("events", "involvedObject.uid", True),
        ("Event", "source", True),
        ("Node", "spec.unschedulable", True),
        ("Node", "spec.nodeName", False),
        ("secrets", "type", True),
        ("ConfigMap", "metadata.name", True),
        ("ConfigMap", "data", False),
        ("Service", "metadata.namespace", True),
        ("Namespace", "status.phase", True),
    ],
)
def test_supported_fields(kind, field, ok):
    selector = parse_field_selector(f"{field}=x")
    if ok:
        check_field_selector(kind, selector)
        assert field in supported_fields(kind)
    else:
        with pytest.raises(SelectorError) as err:
            check_field_selector(kind, selector)
        assert str(err.value) == f"field label not supported: {field}"


def test_object_fields_for_events_nodes_and_secrets():
    event = {
        "metadata": {"name": "e", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u1"},
        "reason": "Scheduled",
        "source": {"component": "default-scheduler"},
        "type": "Normal",
    }
    fields = object_fields("Event", event)
    assert fields["involvedObject.name"] == "web-1" and fields["involvedObject.kind"] == "Pod"
    assert fields["source"] == "default-scheduler" and fields["reason"] == "Scheduled"
    assert fields["involvedObject.fieldPath"] == ""
    assert (
        object_fields("Node", {"metadata": {"name": "n"}, "spec": {"unschedulable": True}})[
            "spec.unschedulable"
        ]
        == "true"
    )
    assert object_fields("Node", {"metadata": {"name": "n"}})["spec.unschedulable"] == "false"
    assert object_fields("Secret", {"metadata": {"name": "s"}, "type": "Opaque"})["type"] == "Opaque"
