import { describe, expect, it } from 'vitest';
import { extractTranscript } from '../src/lib/transcript';

describe('GenAI semantic conventions', () => {
  it('reads system instructions, input and output messages with tool calls', () => {
    const t = extractTranscript({
      'gen_ai.system_instructions': JSON.stringify([{ type: 'text', content: 'Be brief.' }]),
      'gen_ai.input.messages': JSON.stringify([
        { role: 'user', parts: [{ type: 'text', content: 'Weather in Paris?' }] },
        { role: 'assistant', parts: [{ type: 'tool_call', id: 'c1', name: 'weather', arguments: { city: 'Paris' } }] },
        { role: 'tool', parts: [{ type: 'tool_call_response', id: 'c1', response: '18 °C' }] },
      ]),
      'gen_ai.output.messages': JSON.stringify([{ role: 'assistant', parts: [{ type: 'text', content: 'It is 18 °C.' }], finish_reason: 'stop' }]),
    });
    expect(t?.convention).toBe('GenAI');
    expect(t?.messages.map((m) => [m.role, m.direction])).toEqual([
      ['system', 'input'],
      ['user', 'input'],
      ['assistant', 'input'],
      ['tool', 'input'],
      ['assistant', 'output'],
    ]);
    expect(t?.messages[1].parts).toEqual([{ kind: 'text', text: 'Weather in Paris?' }]);
    expect(t?.messages[2].parts[0]).toEqual({ kind: 'tool_call', name: 'weather', arguments: '{\n  "city": "Paris"\n}', id: 'c1' });
    expect(t?.messages[3].parts[0]).toEqual({ kind: 'tool_result', content: '18 °C', id: 'c1' });
  });

  it('takes messages sent as arrays rather than JSON strings', () => {
    const t = extractTranscript({ 'gen_ai.input.messages': [{ role: 'user', parts: [{ type: 'text', content: 'hi' }] }] });
    expect(t?.messages[0].parts).toEqual([{ kind: 'text', text: 'hi' }]);
  });

  it("reads OpenLLMetry's indexed gen_ai.prompt and gen_ai.completion attributes", () => {
    const t = extractTranscript({
      'gen_ai.prompt.1.role': 'user',
      'gen_ai.prompt.1.content': 'second',
      'gen_ai.prompt.0.role': 'system',
      'gen_ai.prompt.0.content': 'first',
      'gen_ai.completion.0.role': 'assistant',
      'gen_ai.completion.0.content': 'answer',
      'gen_ai.completion.0.tool_calls.0.name': 'search',
      'gen_ai.completion.0.tool_calls.0.arguments': '{"q":"x"}',
    });
    expect(t?.convention).toBe('GenAI');
    expect(t?.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
    expect(t?.messages[0].parts).toEqual([{ kind: 'text', text: 'first' }]);
    expect(t?.messages[2].parts[1]).toMatchObject({ kind: 'tool_call', name: 'search' });
  });

  it('reads the message events of older instrumentations', () => {
    const t = extractTranscript({}, [
      { name: 'gen_ai.user.message', attributes: { content: 'ping' } },
      { name: 'gen_ai.choice', attributes: { message: JSON.stringify({ role: 'assistant', content: 'pong' }) } },
    ]);
    expect(t?.messages).toEqual([
      { role: 'user', parts: [{ kind: 'text', text: 'ping' }], direction: 'input' },
      { role: 'assistant', parts: [{ kind: 'text', text: 'pong' }], direction: 'output' },
    ]);
  });
});

describe('OpenInference', () => {
  it('groups llm.input_messages.N.* by index, in numeric order', () => {
    const attrs: Record<string, unknown> = {
      'llm.input_messages.10.message.role': 'user',
      'llm.input_messages.10.message.content': 'eleventh',
      'llm.input_messages.2.message.role': 'user',
      'llm.input_messages.2.message.contents.0.message_content.type': 'text',
      'llm.input_messages.2.message.contents.0.message_content.text': 'third',
      'llm.input_messages.0.message.role': 'system',
      'llm.input_messages.0.message.content': 'first',
      'llm.output_messages.0.message.role': 'assistant',
      'llm.output_messages.0.message.tool_calls.0.tool_call.function.name': 'lookup',
      'llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments': '{"id":7}',
      'llm.model_name': 'gpt-4o',
    };
    const t = extractTranscript(attrs);
    expect(t?.convention).toBe('OpenInference');
    expect(t?.messages.map((m) => m.parts.map((p) => (p.kind === 'text' ? p.text : p.kind)))).toEqual([['first'], ['third'], ['eleventh'], ['tool_call']]);
    expect(t?.messages[3]).toMatchObject({ role: 'assistant', direction: 'output', parts: [{ kind: 'tool_call', name: 'lookup', arguments: '{\n  "id": 7\n}' }] });
  });
});

describe('Langfuse', () => {
  it('reads observation input as OpenAI-style messages and output as a message', () => {
    const t = extractTranscript({
      'langfuse.observation.input': JSON.stringify([
        { role: 'system', content: 'sys' },
        { role: 'user', content: [{ type: 'text', text: 'Reverse a list' }] },
      ]),
      'langfuse.observation.output': JSON.stringify({ role: 'assistant', content: 'done', tool_calls: [{ id: 't', function: { name: 'run', arguments: '{}' } }] }),
    });
    expect(t?.convention).toBe('Langfuse');
    expect(t?.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
    expect(t?.messages[1].parts).toEqual([{ kind: 'text', text: 'Reverse a list' }]);
    expect(t?.messages[2].parts).toEqual([
      { kind: 'text', text: 'done' },
      { kind: 'tool_call', name: 'run', arguments: '{}', id: 't' },
    ]);
  });

  it('shows plain text input and output', () => {
    const t = extractTranscript({ 'langfuse.observation.input': 'question?', 'langfuse.observation.output': 'answer.' });
    expect(t?.messages).toEqual([
      { role: 'input', parts: [{ kind: 'text', text: 'question?' }], direction: 'input' },
      { role: 'output', parts: [{ kind: 'text', text: 'answer.' }], direction: 'output' },
    ]);
  });
});

describe('Traceloop', () => {
  it('unwraps entity input and output', () => {
    const t = extractTranscript({
      'traceloop.entity.input': JSON.stringify({ inputs: { messages: [{ role: 'user', content: 'Digest the tickets.' }] } }),
      'traceloop.entity.output': JSON.stringify({ outputs: 'Mostly password resets.' }),
    });
    expect(t?.convention).toBe('Traceloop');
    expect(t?.messages).toEqual([
      { role: 'user', parts: [{ kind: 'text', text: 'Digest the tickets.' }], direction: 'input' },
      { role: 'output', parts: [{ kind: 'text', text: 'Mostly password resets.' }], direction: 'output' },
    ]);
  });

  it('shows arbitrary entity input as JSON', () => {
    const t = extractTranscript({ 'traceloop.entity.input': JSON.stringify({ args: [1, 2], kwargs: { x: 1 } }) });
    expect(t?.messages[0].parts[0].kind).toBe('text');
    expect((t?.messages[0].parts[0] as { text: string }).text).toContain('"kwargs"');
  });
});

describe('spans without messages', () => {
  it('give no transcript', () => {
    expect(extractTranscript({ 'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': 10 })).toBeNull();
    expect(extractTranscript({})).toBeNull();
  });
  it('survive malformed JSON by showing it as text', () => {
    const t = extractTranscript({ 'gen_ai.input.messages': '[{"role": "user", ' });
    expect(t?.messages[0].parts).toEqual([{ kind: 'text', text: '[{"role": "user", ' }]);
  });
});
