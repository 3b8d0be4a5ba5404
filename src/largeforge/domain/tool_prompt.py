"""The fallback tool prompt, for chat templates that do not render tools (SmolLM2's).

It follows the hermes convention that Qwen2.5 and Hermes models are trained on: the tools as
JSON inside `<tools></tools>` in the system prompt, each call written as
`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, and each result returned in a
user turn as `<tool_response>\\n...\\n</tool_response>`. Earlier calls of the assistant are
written back into its turns in the same form, so the model sees its own convention.

Training rows with tools (a later issue) are rendered through the same functions, so a model
fine-tuned on them is served with exactly the text it learned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from largeforge.domain.datasets import Message, Role
from largeforge.domain.tools import ToolCall, ToolSpec

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

SYSTEM_BLOCK = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def tools_block(tools: Sequence[ToolSpec]) -> str:
    """The system-prompt block that describes `tools` and how to call them."""
    lines = "\n".join(json.dumps(tool.as_dict(), ensure_ascii=False) for tool in tools)
    return SYSTEM_BLOCK.format(tools=lines)


def call_text(call: ToolCall) -> str:
    """One call as the hermes convention writes it (what the grammar makes the model write)."""
    arguments = call.arguments.strip() or "{}"
    return (
        f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(call.name, ensure_ascii=False)}, '
        f'"arguments": {arguments}}}\n{TOOL_CALL_CLOSE}'
    )


def with_fallback_tools(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[Message]:
    """`messages` rewritten for a template that knows only system, user and assistant turns.

    With `tools`, their block is added to the system prompt (a system turn is created when
    there is none). Assistant calls become `<tool_call>` text, tool results user turns with
    `<tool_response>` blocks (consecutive results share one turn).
    """
    out: list[Message] = []
    if tools:
        block = tools_block(tools)
        if messages and messages[0].role is Role.SYSTEM:
            out.append(Message(Role.SYSTEM, f"{messages[0].content}\n\n{block}"))
            messages = messages[1:]
        else:
            out.append(Message(Role.SYSTEM, block))
    for message in messages:
        if message.role is Role.TOOL:
            response = f"<tool_response>\n{message.content}\n</tool_response>"
            if out and out[-1].role is Role.USER and out[-1].content.startswith("<tool_response>"):
                out[-1] = Message(Role.USER, f"{out[-1].content}\n{response}")
            else:
                out.append(Message(Role.USER, response))
        elif message.role is Role.ASSISTANT and message.tool_calls:
            calls = "\n".join(call_text(call) for call in message.tool_calls)
            text = f"{message.content}\n{calls}" if message.content else calls
            out.append(Message(Role.ASSISTANT, text))
        else:
            out.append(Message(message.role, message.content))
    return out
