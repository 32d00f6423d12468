"""The node's daily service window (``--service_start/--service_stop/--service_end``)."""

import pytest

from dispyscheduler.node.service import (OFF, SERVING, STOPPING, ServiceWindow,
                                         parse_time_of_day)


def at(text):
    return parse_time_of_day(text)


def test_times_of_day_parse_and_bad_ones_are_refused():
    assert at('00:00') == 0 and at('08:30') == 8 * 3600 + 1800 and at('23:59:59') == 86399
    for bad in ('24:00', '8', '08:60', 'noon', '08:00:00:00', '-1:00'):
        with pytest.raises(ValueError, match='not a time of day'):
            parse_time_of_day(bad)


def test_a_day_window_serves_then_stops_taking_jobs_then_ends():
    window = ServiceWindow(at('08:00'), at('17:00'), at('18:00'))
    assert [window.state(at(t)) for t in ('07:59', '08:00', '16:59', '17:00', '17:59',
                                          '18:00', '23:00')] == [
        OFF, SERVING, SERVING, STOPPING, STOPPING, OFF, OFF]
    assert window.next_change(at('07:00')) == 3600
    assert window.next_change(at('18:00')) == 14 * 3600


def test_a_night_window_crosses_midnight():
    window = ServiceWindow(start=at('22:00'), end=at('06:00'))
    assert [window.state(at(t)) for t in ('21:59', '22:00', '23:59', '00:00', '05:59',
                                          '06:00', '12:00')] == [
        OFF, SERVING, SERVING, SERVING, SERVING, OFF, OFF]


def test_stop_alone_and_no_window():
    stop_only = ServiceWindow(stop=at('18:00'))  # from midnight to 18:00 it takes jobs
    assert stop_only.state(at('17:59')) == SERVING and stop_only.state(at('18:00')) == STOPPING
    assert stop_only.state(at('00:00')) == SERVING
    assert ServiceWindow().state(at('03:00')) == SERVING and not ServiceWindow().limited
    assert ServiceWindow(start=at('09:00')).state(at('03:00')) == SERVING
