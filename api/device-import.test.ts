import { describe, expect, it } from 'vitest';
import { csvImportEntries, jsonImportEntries, markDuplicateNames } from './device-import.ts';
import { parseBbox } from './device-filter.ts';

describe('import rows', () => {
  it('reads JSON rows with a location object or flat lat/lng/alt, and ignores the other fields of an export', () => {
    const entries = jsonImportEntries([
      { name: 'a', type: 'bus', location: { lat: 23, lng: 113.7 } },
      { name: 'b', lat: 23, lng: 113.7, alt: -3, isGateway: true, label: null },
      { id: 7, name: 'c', type: 'generic', domain: 'generic', label: 'x', location: null, isGateway: false, gatewayId: 3, createdAt: 'then', updatedAt: 'now' },
    ]);
    expect(entries.map((e) => e.input)).toEqual([
      { name: 'a', type: 'bus', label: null, location: { lat: 23, lng: 113.7 }, isGateway: false },
      { name: 'b', type: 'generic', label: null, location: { lat: 23, lng: 113.7, alt: -3 }, isGateway: true },
      { name: 'c', type: 'generic', label: 'x', location: null, isGateway: false },
    ]);
  });

  it('explains what is wrong with a JSON row', () => {
    const errors = jsonImportEntries([
      { name: 'a', location: { lat: 23 } },
      { name: 'a', lat: '23', lng: 1 },
      { name: 'a\u0001' },
      { name: 'a', alt: 5 },
      null,
      { name: 'a', isGateway: 'yes' },
    ]).map((e) => e.error);
    expect(errors[0]).toMatch(/location/);
    expect(errors[1]).toMatch(/^lat /);
    expect(errors[2]).toMatch(/^name /);
    expect(errors[3]).toBe('alt needs lat and lng');
    expect(errors[4]).toMatch(/expected an object/);
    expect(errors[5]).toMatch(/^isGateway /);
  });

  it('reads CSV with any column order and case, a BOM, quoted commas and empty cells', () => {
    const entries = csvImportEntries('\ufeffType,NAME,lat,lng,is_gateway\r\nbus,"b, 1",23.1,113.8,TRUE\r\n,plain,,,\r\n');
    expect(entries).toEqual([
      { row: 2, name: 'b, 1', input: { name: 'b, 1', type: 'bus', label: null, location: { lat: 23.1, lng: 113.8 }, isGateway: true } },
      { row: 3, name: 'plain', input: { name: 'plain', type: 'generic', label: null, location: null, isGateway: false } },
    ]);
  });

  it('reports a record with the wrong number of fields on its own line and carries on; stray quotes are text', () => {
    const entries = csvImportEntries('name,label,type\na,1" pipe,bus\nb,1\nc,"x"y,bus\n d , spaced ,bus\n');
    expect(entries.map((e) => [e.row, e.name, e.input?.label ?? e.error])).toEqual([
      [2, 'a', '1" pipe'],
      [3, null, 'CSV: Invalid Record Length: expect 3, got 2 on line 3'],
      [4, 'c', '"x"y'],
      [5, 'd', 'spaced'],
    ]);
  });

  it('says so when an unclosed quote swallows the rest of the file', () => {
    const entries = csvImportEntries('name,label\na,"open\nb,x\nc,y\n');
    expect(entries).toHaveLength(1);
    expect(entries[0]!.error).toMatch(/Quote Not Closed.*no row after it was imported/);
  });

  it('marks later rows repeating a name', () => {
    const entries = jsonImportEntries([{ name: 'x' }, { name: 'y' }, { name: 'x', type: 'bus' }]);
    markDuplicateNames(entries);
    expect(entries.map((e) => e.error ?? 'ok')).toEqual(['ok', 'ok', 'the name appears earlier in this import (row 0)']);
  });
});

describe('bbox', () => {
  it('parses minLng,minLat,maxLng,maxLat', () => {
    expect(parseBbox('113.5,22.6,114.3,23.2')).toEqual([113.5, 22.6, 114.3, 23.2]);
    expect(parseBbox(' -180, -90, 180, 90 ')).toEqual([-180, -90, 180, 90]);
  });

  it('refuses anything else with the reason', () => {
    expect(() => parseBbox('1,2,3')).toThrow(/four numbers/);
    expect(() => parseBbox('1,2,3,4,5')).toThrow(/four numbers/);
    expect(() => parseBbox('1,2,3,NaN')).toThrow(/four numbers/);
    expect(() => parseBbox('1,2,,4')).toThrow(/four numbers/);
    expect(() => parseBbox('3,2,1,4')).toThrow(/minLng 3 must be less than maxLng 1/);
    expect(() => parseBbox('1,2,3,2')).toThrow(/minLat 2 must be less than maxLat 2/);
    expect(() => parseBbox('1,-91,3,4')).toThrow(/minLat -91 is outside -90..90/);
    expect(() => parseBbox('1,2,181,4')).toThrow(/maxLng 181 is outside -180..180/);
  });
});
