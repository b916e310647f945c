"""FrameAssembler: terminators, idle gaps, ID TECH CR-per-track, STX/ETX, the length cap."""

from __future__ import annotations

import pytest

from drivers.frames import FrameAssembler, describe_frame

GAP = 0.15
T1 = b"%B6000001234567894^LOYAL/JANE^2912101000000000?"
T2 = b";6000001234567894=29121010000000000000?"


def test_single_track_swipe_with_one_cr_ends_after_the_gap():
    asm = FrameAssembler(GAP)
    assert asm.feed(T2 + b"\r", 10.0) == []  # "?" CR: maybe another ID TECH track follows
    assert asm.deadline() == pytest.approx(10.0 + GAP)
    assert asm.poll(10.0 + GAP - 0.001) is None
    assert asm.poll(10.0 + GAP) == T2
    assert asm.poll(20.0) is None
    assert asm.frames == 1


def test_magtek_swipe_tracks_back_to_back_ends_at_the_cr():
    asm = FrameAssembler(GAP)
    assert asm.feed(T1 + T2 + b"\r", 10.0) == [T1 + T2]  # no CR between tracks: CR is final


def test_magtek_mode_ends_at_the_cr_at_once():
    asm = FrameAssembler(GAP, wait_after_track_cr=False)
    assert asm.feed(T1 + T2 + b"\r", 10.0) == [T1 + T2]
    assert asm.deadline() is None


def test_idtech_cr_after_every_track_is_one_frame():
    asm = FrameAssembler(GAP)
    assert asm.feed(T1 + b"\r", 1.0) == []
    assert asm.feed(T2 + b"\r", 1.03) == []
    assert asm.feed(b"+E?\r", 1.06) == []
    assert asm.poll(1.06 + GAP) == T1 + b"\r" + T2 + b"\r+E?"


def test_idtech_cr_lf_per_track_and_lrc_after_the_end_sentinel():
    asm = FrameAssembler(GAP)
    asm.feed(T1 + b"\r\n", 1.0)
    asm.feed(T2 + b"X\r\n", 1.01)  # X: an LRC byte after "?"
    assert asm.poll(1.01 + GAP) == T1 + b"\r\n" + T2 + b"X"


def test_a_second_track_after_the_gap_is_a_new_frame():
    asm = FrameAssembler(GAP)
    asm.feed(T1 + b"\r", 1.0)
    assert asm.feed(T2 + b"\r", 1.0 + GAP + 0.01) == [T1]
    assert asm.poll(2.0) == T2


def test_soft_cr_then_something_else_ends_the_swipe_at_the_cr():
    asm = FrameAssembler(GAP)
    asm.feed(T2 + b"\r", 1.0)
    assert asm.feed(b"]E02900001234566\r", 1.02) == [T2, b"]E02900001234566"]
    assert not asm.pending


def test_a_tab_after_a_track_ends_the_frame_at_once():
    asm = FrameAssembler(GAP)
    assert asm.feed(T2 + b"\t", 1.0) == [T2]
    asm.feed(T1 + b"\r", 2.0)
    assert asm.feed(b"\t", 2.01) == [T1]


def test_magstripe_cr_without_end_sentinel_ends_at_once():
    asm = FrameAssembler(GAP)
    assert asm.feed(b"%B60000012\r", 1.0) == [b"%B60000012"]


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n", b"\t"])
def test_barcode_terminators_end_the_frame_at_once(terminator):
    asm = FrameAssembler(GAP)
    assert asm.feed(b"]E02900001234566" + terminator, 1.0) == [b"]E02900001234566"]
    assert asm.feed(b"2900001234566" + terminator, 1.01) == [b"2900001234566"]
    assert asm.poll(5.0) is None  # the LF of CR LF made no empty frame


def test_two_scans_in_one_read():
    asm = FrameAssembler(GAP)
    assert asm.feed(b"]C0LOY-AB12\r\n]C0LOY-CD34\r\n", 1.0) == [b"]C0LOY-AB12", b"]C0LOY-CD34"]


def test_ten_ms_pauses_inside_a_swipe_do_not_split_it():
    asm = FrameAssembler(GAP)
    t = 1.0
    for i in range(0, len(T1), 8):
        assert asm.feed(T1[i : i + 8], t) == []
        t += 0.010
    assert asm.feed(b"\r", t) == []
    assert asm.poll(t + GAP) == T1


def test_unterminated_frame_ends_after_the_idle_gap():
    asm = FrameAssembler(GAP)
    asm.feed(b"]C0LOY-AB12", 1.0)
    assert asm.poll(1.0 + GAP / 2) is None
    assert asm.poll(1.0 + GAP) == b"]C0LOY-AB12"


def test_a_byte_after_the_gap_first_hands_out_the_old_frame():
    asm = FrameAssembler(GAP)
    asm.feed(b"%B6000", 1.0)
    assert asm.feed(b"]E0123\r", 2.0) == [b"%B6000", b"]E0123"]


def test_stx_etx_frame_keeps_stx_etx_and_inner_cr_and_ends_at_etx():
    asm = FrameAssembler(GAP)
    raw = b"\x02%B6000001234567894^LOYAL/JANE^2912?;6000001234567894=2912?\r\x03"
    assert asm.feed(raw, 1.0) == [raw]
    assert asm.feed(b"\r\n", 1.001) == []
    assert asm.poll(2.0) is None


def test_pdf417_licence_with_inner_lf_and_cr_is_not_split():
    raw = (
        b"]L2@\n\x1e\rANSI 636000100102DL00410278ZV03190008DLDAQT64235789\nDCSSAMPLE\nDBB06061986\r"
    )
    asm = FrameAssembler(GAP)
    assert asm.feed(raw, 1.0) == []
    assert asm.poll(1.0 + GAP) == raw[:-1]


def test_frame_times():
    asm = FrameAssembler(GAP)
    asm.feed(b"]C0AB", 1.0)
    (frame,) = asm.feed_frames(b"CD\r", 1.05)
    assert (frame.data, frame.first_byte_at, frame.last_byte_at) == (b"]C0ABCD", 1.0, 1.05)


def test_frame_times_of_a_swipe_ended_by_what_follows_its_cr():
    asm = FrameAssembler(GAP)
    asm.feed(T2, 1.0)
    asm.feed(b"\r", 1.01)
    (swipe, scan) = asm.feed_frames(b"]E0123\r", 1.05)
    assert (swipe.first_byte_at, swipe.last_byte_at) == (1.0, 1.01)
    assert (scan.first_byte_at, scan.last_byte_at) == (1.05, 1.05)


def test_lone_terminators_are_not_frames():
    asm = FrameAssembler(GAP)
    assert asm.feed(b"\r\n\t\r", 1.0) == []
    assert asm.poll(5.0) is None
    assert asm.frames == 0


def test_frame_at_the_cap_passes_one_byte_more_is_dropped():
    asm = FrameAssembler(GAP, max_len=16)
    assert asm.feed(b"A" * 16 + b"\r", 1.0) == [b"A" * 16]
    assert asm.feed(b"B" * 17 + b"\r", 2.0) == []
    assert asm.dropped == 1
    assert asm.feed(b"]E0123\r", 2.01) == [b"]E0123"]


def test_noise_beyond_the_cap_is_dropped_until_the_gap_then_the_next_swipe_arrives():
    asm = FrameAssembler(GAP, max_len=4096)
    noise = bytes((i * 7 + 33) % 90 + 33 for i in range(5000))  # printable, no terminator
    t = 1.0
    for i in range(0, len(noise), 500):
        assert asm.feed(noise[i : i + 500], t) == []
        t += 0.005
    assert asm.dropped == 1
    assert asm.discarding
    assert asm.poll(t + GAP) is None  # the tail after the drop never comes out
    assert not asm.discarding
    assert asm.feed(T2 + b"\r", t + 1.0) == []
    assert asm.poll(t + 1.0 + GAP) == T2
    assert asm.dropped == 1


def test_overflow_resynchronises_at_the_next_terminator():
    asm = FrameAssembler(GAP, max_len=100)
    assert asm.feed(b"X" * 300 + b"\r]E0123\r", 1.0) == [b"]E0123"]
    assert asm.dropped == 1


def test_drop_discards_the_partial_frame():
    asm = FrameAssembler(GAP)
    asm.feed(b"%B6000", 1.0)
    asm.drop()
    assert not asm.pending
    assert asm.poll(5.0) is None
    assert asm.feed(b"]E0123\r", 6.0) == [b"]E0123"]


def test_drop_with_now_also_discards_the_rest_of_the_frame():
    asm = FrameAssembler(GAP)
    asm.feed(b";60000", 1.0)
    asm.drop(now=1.01)  # SYN_DROPPED: events were lost mid-frame
    assert asm.feed(b"01234567894=2912?\r", 1.02) == []  # the fragment after the loss
    assert asm.feed(b"]E0123\r", 1.03) == [b"]E0123"]
    asm.drop(now=2.0)
    assert asm.feed(b"6000", 2.01) == []
    assert asm.poll(2.01 + GAP) is None  # the gap ends the resync, nothing comes out
    assert asm.feed(b"]E0456\r", 3.0) == [b"]E0456"]


def test_invalid_parameters():
    with pytest.raises(ValueError):
        FrameAssembler(0)
    with pytest.raises(ValueError):
        FrameAssembler(0.1, max_len=0)


def test_describe_frame_withholds_card_data():
    assert "21088817A01" in describe_frame(b"21088817A01")
    for card in (T1, T2, b"]L2@\n\x1e\rANSI 6360", b"\x02%B123?\x03"):
        text = describe_frame(card)
        assert "withheld" in text and "6000" not in text and "6360" not in text


def test_single_cr_reader_is_learned_and_its_swipes_end_at_the_cr():
    from drivers.frames import FrameAssembler

    assembler = FrameAssembler(idle_gap_s=0.15)
    # Tracks back to back, one CR: the CR is final at once, no idle gap to wait for.
    assert assembler.feed(b"%B6000001234567894^A/B^29?;6000001234567894=29?\r", 0.0) == [
        b"%B6000001234567894^A/B^29?;6000001234567894=29?"
    ]
    # Learned: the same reader's track-2-only swipe also ends at its CR.
    assert assembler.feed(b";6000001234567894=29?\r", 1.0) == [b";6000001234567894=29?"]


def test_cr_per_track_reader_is_never_taken_for_a_single_cr_one():
    from drivers.frames import FrameAssembler

    assembler = FrameAssembler(idle_gap_s=0.15)
    assert assembler.feed(b"%B6000001234567894^A/B^29?\r;6000001234567894=29?\r", 0.0) == []
    assert assembler.poll(0.2) == b"%B6000001234567894^A/B^29?\r;6000001234567894=29?"
    # A later swipe with joined tracks does not flip this reader to "single CR".
    assert assembler.feed(b"%B1?;1?\r", 1.0) == []
    assert assembler.poll(1.2) == b"%B1?;1?"
