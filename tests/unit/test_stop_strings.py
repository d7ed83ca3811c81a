
from backend.messages import Submit
from backend.sampling.params import SamplerParams
from backend.sessions import Session, Status
from backend.tokenizer import Tokenizer


def feed(tok: Tokenizer, text_pieces: list[str], **params) -> tuple[Session, list[str]]:
    sub = Submit.__new__(Submit)  # no event loop needed: the session never touches the sink
    object.__setattr__(sub, "tokens", (1,))
    object.__setattr__(sub, "id", "x")
    s = Session(sub, 0, tok, SamplerParams(**params))
    out = []
    for piece in text_pieces:
        for t in tok.encode(piece):
            if s.status is Status.FINISHED:
                break
            d = s.accept(t)
            if d is not None:
                out.append(d.text)
    return s, out


def test_stop_string_split_across_tokens_is_held_back_and_cut(tok):
    s, deltas = feed(tok, ["Hello", " wor", "ld", "\n", "\nUs", "er: more"], stop=("\n\nUser:",))
    assert s.finish_reason == "stop"
    assert s.text == "Hello world" == "".join(deltas)
    assert all("\n" not in d for d in deltas)


def test_held_text_that_is_not_a_stop_is_released(tok):
    s, deltas = feed(tok, ["a\n", "b"], stop=("\n\n",), max_tokens=3)
    assert "".join(deltas) == s.text == "a\nb"


def test_max_tokens_ends_with_length_and_multibyte_text_is_never_split(tok):
    sub = Submit.__new__(Submit)
    object.__setattr__(sub, "tokens", (1,))
    object.__setattr__(sub, "id", "x")
    s = Session(sub, 0, tok, SamplerParams(max_tokens=3))
    byte_tokens = [b + 1 for b in "é€".encode()]  # ids 1..256 are single bytes
    texts = [d.text for t in byte_tokens[:3] if (d := s.accept(t)) is not None]
    assert s.finish_reason == "length"
    assert texts[0] == "é"  # complete characters only
    assert "".join(texts) == s.text
