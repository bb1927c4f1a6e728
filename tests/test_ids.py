import os
import uuid

from ziggurat.ids import new_id_hex, new_id_text


def test_ids_are_version_4_uuids_in_both_forms() -> None:
    for text in (new_id_hex(), new_id_text()):
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    assert len(new_id_hex()) == 32
    text = new_id_text()
    assert str(uuid.UUID(text)) == text


def test_ids_do_not_repeat_across_buffer_refills() -> None:
    ids = [new_id_hex() for _ in range(5_000)]  # 16 bytes each: about 20 refills of the 4 KiB buffer
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_id_hex()  # the parent's buffer now holds unused bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.close(read_end)
        os.write(write_end, new_id_hex().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child_id) == 32
    assert child_id != new_id_hex()
