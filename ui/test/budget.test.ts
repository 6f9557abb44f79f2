import { describe, expect, it } from 'vitest';
import { EMPTY_FORM, errorField, fromBudget, toBody } from '../src/lib/budget';

describe('budget form', () => {
  it('builds the API body from the form', () => {
    const { body, errors } = toBody({
      ...EMPTY_FORM,
      name: ' team-search ',
      scope: 'tag.team=search\nmodel = gpt-4o',
      limit: '25.5',
      period: 'rolling 7d',
      webhooks: 'https://hooks.example.com/a\n\n',
      timezone: 'Europe/Paris',
    });
    expect(errors).toEqual({});
    expect(body).toEqual({
      name: 'team-search',
      scope: { 'tag.team': 'search', model: 'gpt-4o' },
      metric: 'cost_usd',
      limit: 25.5,
      period: 'rolling 7d',
      thresholds: [50, 80, 100],
      webhooks: ['https://hooks.example.com/a'],
      timezone: 'Europe/Paris',
      mode: 'enforce',
      fail: 'open',
    });
  });
  it('names the field of what it can tell is wrong before sending', () => {
    expect(toBody({ ...EMPTY_FORM, name: 'x', limit: 'lots' }).errors).toEqual({ limit: 'must be a number' });
    expect(toBody({ ...EMPTY_FORM, name: 'x', limit: '1', scope: 'alice' }).errors.scope).toContain('NAME=VALUE');
    expect(toBody({ ...EMPTY_FORM, name: 'x', limit: '1', thresholds: '50, lots' }).errors.thresholds).toBeDefined();
  });
  it('round-trips a budget the API shows', () => {
    const view = { name: 'b', scope: { user: 'alice' }, metric: 'tokens', limit: 1000, period: 'day', timezone: 'UTC', thresholds: [80, 100], webhooks: ['https://x.example/h'], mode: 'observe', fail: 'closed' };
    const { body } = toBody(fromBudget(view));
    expect(body).toEqual({ ...view });
  });
  it("maps the API's validation errors to their field", () => {
    expect(errorField('limit: must be a number above 0, got -1')).toBe('limit');
    expect(errorField('webhooks[0]: scheme "ftp" is not allowed')).toBe('webhooks');
    expect(errorField('thresholds[1]: 50 is not above 80')).toBe('thresholds');
    expect(errorField('scope.colour: unknown scope field')).toBe('scope');
    expect(errorField('name: budget bud_1 of project "default" is already called "x"')).toBe('name');
    expect(errorField('the body is not JSON')).toBeNull();
  });
});
