import { readFile } from 'node:fs/promises';
import { DEFAULT_TOWNS, createTownIndex, parseTownsGeoJson, type TownIndex } from '../../geo/towns.ts';

/** The towns scopes may name: an operator's official boundaries (TOWNS_GEOJSON) or the shipped approximate areas. */
export async function loadTowns(file: string | undefined): Promise<TownIndex> {
  if (file === undefined) return DEFAULT_TOWNS;
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`TOWNS_GEOJSON: cannot read ${file} as JSON: ${(err as Error).message}`);
  }
  try {
    return createTownIndex(parseTownsGeoJson(json));
  } catch (err) {
    throw new Error(`TOWNS_GEOJSON (${file}): ${(err as Error).message}`);
  }
}
