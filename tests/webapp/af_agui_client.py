"""Agent Framework's own AG-UI client (`AGUIChatClient`) against our endpoint, run in an environment of its own.

agent-framework-ag-ui 1.7.0 pins ag-ui-protocol < 0.2, and the web app uses ag-ui-protocol 1.0, so the
two cannot share the project's environment. tests/webapp/test_ag_ui.py runs this file with

    uv run --no-project --isolated --with agent-framework-ag-ui==1.7.0 python tests/webapp/af_agui_client.py \\
        <endpoint> <thread id> <question>

and reads the one JSON object it prints: what the client made of the streamed run. It imports nothing
from the project (a separate interpreter, separate packages).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from agent_framework import ChatResponse, Message
from agent_framework_ag_ui import AGUIChatClient


async def ask(endpoint: str, thread_id: str, question: str) -> dict[str, Any]:
    async with AGUIChatClient(endpoint=endpoint) as client:
        stream = client.get_response(
            [Message("user", [question])], stream=True, options={"metadata": {"thread_id": thread_id}}
        )
        updates = [update async for update in stream]
    response = ChatResponse.from_updates(updates)
    contents = [content for message in response.messages for content in message.contents]
    return {
        "started": updates[0].additional_properties or {},
        "finished": updates[-1].additional_properties or {},
        "finish_reason": str(updates[-1].finish_reason) if updates[-1].finish_reason else None,
        "text": "".join(update.text for update in updates),
        "calls": [
            {"call_id": c.call_id, "name": c.name, "arguments": json.loads(str(c.arguments)), "hosted": c.hosted}
            for c in contents
            if c.type == "function_call"
        ],
        "results": {str(c.call_id): str(c.result) for c in contents if c.type == "function_result"},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(ask(*sys.argv[1:4])), default=str))
