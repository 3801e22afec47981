// The official AG-UI client (@ag-ui/client 1.0.0) against web.py's AG-UI endpoint: a run, a Stop,
// a join mid-answer and a join after the run ended. The client checks every stream itself
// (verifyEvents: order, open/close pairs) and rejects runAgent() on a stream it does not accept.
//
// tests/webapp/test_agui_node.py starts web.py (demo model, a token delay) and runs
//     AGUI_BASE_URL=http://127.0.0.1:<port> node --test
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import test from "node:test";

import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";

const BASE = process.env.AGUI_BASE_URL;
assert.ok(BASE, "set AGUI_BASE_URL to a running web.py (tests/webapp/test_agui_node.py does)");
const AG_UI = `${BASE}/ag-ui/TravelPlanner`;

// What a front end that joins a live run needs: HttpAgent has no connect() of its own.
class JoiningAgent extends HttpAgent {
  connect(input) {
    return transformHttpEventStream(
      runHttpRequest(() => this.fetch(`${this.url}/connect`, this.requestInit(input))),
      this.debugLogger,
    );
  }
}

// Records the events a run delivered, and resolves `text` once N text deltas arrived.
function recorder(textDeltas = 0) {
  const seen = { events: [], finished: undefined };
  let arrived;
  seen.text = new Promise((resolve) => (arrived = resolve));
  seen.subscriber = {
    onEvent: ({ event }) => {
      seen.events.push(event);
      if (seen.events.filter((e) => e.type === "TEXT_MESSAGE_CONTENT").length === textDeltas) arrived();
    },
    onRunFinishedEvent: (params) => {
      seen.finished = params;
    },
  };
  return seen;
}

function ask(threadId, question) {
  const agent = new HttpAgent({ url: AG_UI, threadId });
  agent.addMessage({ id: randomUUID(), role: "user", content: question });
  return agent;
}

async function stop(threadId) {
  const response = await fetch(`${BASE}/agents/TravelPlanner/cancel/${threadId}`, { method: "POST" });
  assert.equal(response.status, 200, await response.text());
}

// The TravelPlanner's turn: its user message, one assistant message with both tool calls, their results, the answer.
function assertOneTurn(messages, destination) {
  assert.deepEqual(
    messages.map((m) => m.role),
    ["user", "assistant", "tool", "tool", "assistant"],
  );
  const [user, calls, weather, events, answer] = messages;
  assert.match(user.content, new RegExp(destination));
  assert.deepEqual(
    calls.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments).destination]),
    [
      ["get_weather_forecast", destination],
      ["get_local_events", destination],
    ],
  );
  assert.deepEqual([weather.toolCallId, events.toolCallId], calls.toolCalls.map((c) => c.id));
  assert.match(weather.content, /^Weather forecast for/);
  assert.match(answer.content, new RegExp(`trip to ${destination}`));
}

test("a run: the answer, one assistant message for both tool calls, usage, and the history snapshot", async () => {
  const threadId = `thread-${randomUUID()}`;
  const agent = ask(threadId, "Plan a 2-day trip to Oslo");
  const seen = recorder();

  const { newMessages } = await agent.runAgent({ runId: `run-${randomUUID()}` }, seen.subscriber);

  assertOneTurn(agent.messages, "Oslo");
  assert.equal(seen.finished.outcome, "success");
  const [usage] = seen.finished.event.usage;
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
  const types = seen.events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 2), ["RUN_STARTED", "MESSAGES_SNAPSHOT"]);
  assert.deepEqual(types.slice(-2), ["MESSAGES_SNAPSHOT", "RUN_FINISHED"]);
  const starts = seen.events.filter((e) => e.type === "TOOL_CALL_START");
  assert.deepEqual(new Set(starts.map((e) => e.parentMessageId)), new Set([agent.messages[1].id]));
  assert.ok(newMessages.length >= 4); // the server's ids replaced the client's own user message id

  // A second turn: the opening snapshot brings the first back, so the thread holds both.
  agent.addMessage({ id: randomUUID(), role: "user", content: "Plan a 1-day trip to Bergen" });
  await agent.runAgent({ runId: `run-${randomUUID()}` });
  assertOneTurn(agent.messages.slice(0, 5), "Oslo");
  assertOneTurn(agent.messages.slice(5), "Bergen");
});

test("a Stop: runAgent resolves with the cancelled outcome and keeps what was said", async () => {
  const threadId = `thread-${randomUUID()}`;
  const agent = ask(threadId, "Plan a 3-day trip to Lisbon");
  const seen = recorder(3);

  const running = agent.runAgent({ runId: `run-${randomUUID()}` }, seen.subscriber);
  await seen.text;
  await stop(threadId);
  await running; // resolves: a stopped run is not a failure

  assert.equal(seen.finished.outcome, "cancelled");
  assert.deepEqual(seen.finished.event.outcome, { type: "cancelled" });
  const answer = agent.messages.at(-1);
  assert.equal(answer.role, "assistant");
  assert.ok(answer.content.length > 0 && !answer.content.includes("Enjoy your trip"), answer.content);
});

test("a join mid-answer ends with the same messages as the client that started the run", async () => {
  const threadId = `thread-${randomUUID()}`;
  const starter = ask(threadId, "Plan a 3-day trip to Porto");
  const started = recorder(5);
  const running = starter.runAgent({ runId: `run-${randomUUID()}` }, started.subscriber);
  await started.text;

  const joiner = new JoiningAgent({ url: AG_UI, threadId });
  const joined = recorder();
  await joiner.connectAgent({}, joined.subscriber);
  await running;

  assert.ok(joined.events.some((e) => e.type === "TEXT_MESSAGE_CONTENT"), "the joiner followed the live answer");
  assert.equal(joined.events[0].runId, started.events[0].runId); // the same run
  assert.equal(joined.finished.outcome, "success");
  assertOneTurn(starter.messages, "Porto");
  assert.deepEqual(joiner.messages, starter.messages);
});

test("a join after the run ended gets the thread's history as a finished run", async () => {
  const threadId = `thread-${randomUUID()}`;
  const starter = ask(threadId, "Plan a 2-day trip to Madrid");
  await starter.runAgent({ runId: `run-${randomUUID()}` });

  const joiner = new JoiningAgent({ url: AG_UI, threadId });
  const joined = recorder();
  await joiner.connectAgent({}, joined.subscriber);

  assert.deepEqual(
    joined.events.map((e) => e.type),
    ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"],
  );
  assertOneTurn(joiner.messages, "Madrid");
  assert.deepEqual(joiner.messages, starter.messages);
});

// A run the worker restarted (its first attempt died mid-answer), followed through the resume route.
class ResumingAgent extends HttpAgent {
  connect() {
    const url = `${BASE}${process.env.AGUI_RESTARTED_RUN}`;
    return transformHttpEventStream(
      runHttpRequest(() => this.fetch(url, { method: "GET", headers: { Accept: "text/event-stream" } })),
      this.debugLogger,
    );
  }
}

test("a restarted run: the client accepts it and keeps only the attempt that finished", async () => {
  assert.ok(process.env.AGUI_RESTARTED_RUN, "set by tests/webapp/test_agui_node.py");
  const agent = new ResumingAgent({ url: AG_UI });
  const seen = recorder();

  await agent.connectAgent({}, seen.subscriber);

  assert.ok(seen.events.some((e) => e.type === "CUSTOM" && e.name === "durable-agent.restart"));
  assert.deepEqual(
    agent.messages.map((m) => [m.role, m.content ?? m.toolCalls.map((c) => c.function.name).join()]),
    [
      ["user", "Plan a day in Oslo"],
      ["assistant", "get_weather_forecast"],
      ["tool", "Day 1: Sunny"],
      ["assistant", "Day 1: sun"],
    ],
  );
});
