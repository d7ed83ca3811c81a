from backend.chat import chat_prompt, chat_stop


def test_default_names_and_assistant_cue():
    prompt = chat_prompt([("system", "Be brief.", None), ("user", "hi", None), ("assistant", "Hello!", None),
                          ("user", "how are you?", None)])
    assert prompt == "System: Be brief.\n\nUser: hi\n\nAssistant: Hello!\n\nUser: how are you?\n\nAssistant:"


def test_names_replace_roles_and_message_name_wins():
    names = {"user": "Bob", "assistant": "Alice"}
    prompt = chat_prompt([("user", "hi", None), ("user", "me too", "Carol")], names)
    assert prompt == "Bob: hi\n\nCarol: me too\n\nAlice:"
    assert chat_stop(names) == ("\n\nBob:", "\n\nSystem:", "\n\nTool:")


def test_blank_lines_inside_a_turn_cannot_end_it():
    prompt = chat_prompt([("user", "  a\r\n\r\n\nb\n \nc  ", None)])
    assert prompt == "User: a\nb\nc\n\nAssistant:"


def test_developer_is_a_system_turn_and_a_tool_result_its_own_turn():
    assert chat_prompt([("developer", "rules", None), ("tool", "42", None)]) == (
        "System: rules\n\nTool: 42\n\nAssistant:"
    )
