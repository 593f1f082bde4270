import { describe, expect, it } from 'vitest';
import { parseResourcePath, pathResult, StaPathError } from './resource-path.ts';

const fails = (path: string): { status: number; message: string } => {
  try {
    parseResourcePath(path);
  } catch (err) {
    if (err instanceof StaPathError) return { status: err.status, message: err.message };
    throw err;
  }
  throw new Error(`${path} parsed`);
};

describe('SensorThings resource paths (18-088 §9.2)', () => {
  it('reads the standard usages', () => {
    expect(parseResourcePath('Things')).toEqual({ steps: [{ type: 'Thing', via: { set: 'Things' } }] });
    expect(parseResourcePath('Things(1)')).toEqual({ steps: [{ type: 'Thing', via: { set: 'Things' }, id: 1 }] });
    expect(parseResourcePath('Observations(1)/resultTime')).toEqual({ steps: [{ type: 'Observation', via: { set: 'Observations' }, id: 1 }], property: 'resultTime' });
    expect(parseResourcePath('Observations(1)/resultTime/$value')).toMatchObject({ property: 'resultTime', rawValue: true });
    expect(parseResourcePath('Datastreams(1)/Observations')).toEqual({
      steps: [
        { type: 'Datastream', via: { set: 'Datastreams' }, id: 1 },
        { type: 'Observation', via: { navigation: 'Observations', many: true } },
      ],
    });
    expect(parseResourcePath('Datastreams(1)/Observations/$ref')).toMatchObject({ ref: true });
    expect(parseResourcePath('Datastreams(1)/Observations(1)/FeatureOfInterest').steps.map((s) => s.type)).toEqual(['Datastream', 'Observation', 'FeatureOfInterest']);
    expect(parseResourcePath('Things(1)/Locations/')).toMatchObject({ steps: [{}, { type: 'Location' }] });
  });

  it('tells a collection from an entity and a property', () => {
    expect(pathResult(parseResourcePath('Things'))).toBe('collection');
    expect(pathResult(parseResourcePath('Things(1)'))).toBe('entity');
    expect(pathResult(parseResourcePath('Things(1)/Datastreams'))).toBe('collection');
    expect(pathResult(parseResourcePath('Datastreams(1)/Thing'))).toBe('entity');
    expect(pathResult(parseResourcePath('Things(1)/Datastreams(2)'))).toBe('entity');
    expect(pathResult(parseResourcePath('Things(1)/name'))).toBe('property');
  });

  it('takes string ids in single quotes, with quotes doubled and slashes inside', () => {
    expect(parseResourcePath("Datastreams('12-5')").steps[0]!.id).toBe('12-5');
    expect(parseResourcePath("Things('o''brien/1')/name")).toMatchObject({ steps: [{ id: "o'brien/1" }], property: 'name' });
    expect(parseResourcePath('Things(1)/id')).toMatchObject({ property: '@iot.id' });
  });

  it('refuses what names nothing with 404 and the names there are', () => {
    expect(fails('Thingz')).toMatchObject({ status: 404, message: expect.stringMatching(/no entity set "Thingz".*Things, Locations/) });
    expect(fails('Things(1)/Datastream')).toMatchObject({ status: 404, message: expect.stringMatching(/Thing has no property or navigation property "Datastream"; .*Datastreams/) });
    expect(fails('Datastreams(1)/Thing(2)')).toMatchObject({ status: 404, message: expect.stringMatching(/takes no id/) });
    expect(fails('Things/Datastreams')).toMatchObject({ status: 404, message: expect.stringMatching(/cannot follow the collection Things: .*Things\(1\)\/Datastreams/) });
    expect(fails('Things(1)/name/x')).toMatchObject({ status: 404 });
    expect(fails('Things(1)/$ref')).toMatchObject({ status: 404 });
    expect(fails('Things(1)/$ref/name')).toMatchObject({ status: 404 });
    expect(fails('Things(2147483648)')).toMatchObject({ status: 404 });
    expect(fails('Things(-1)')).toMatchObject({ status: 404 });
    expect(fails('constructor')).toMatchObject({ status: 404 });
    expect(fails('Things(1)/constructor')).toMatchObject({ status: 404 });
    expect(fails(`Things(1)${'/Locations(1)/Things(1)'.repeat(5)}`)).toMatchObject({ status: 404, message: expect.stringMatching(/navigation steps/) });
    expect(fails('Things(1)/x'.repeat(200))).toMatchObject({ status: 404, message: expect.stringMatching(/longer than/) });
  });

  it('refuses malformed ids with 400', () => {
    expect(fails('Things(abc)')).toMatchObject({ status: 400, message: expect.stringMatching(/malformed id in "Things\(abc\)"/) });
    expect(fails("Things('abc)")).toMatchObject({ status: 400, message: expect.stringMatching(/unterminated/) });
    expect(fails('Things(1')).toMatchObject({ status: 400 });
    expect(fails('Things(1.5)')).toMatchObject({ status: 400 });
    expect(fails("Things('a'b')")).toMatchObject({ status: 400 });
  });
});
