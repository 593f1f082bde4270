import { Params } from '../../db/area-query.ts';

/**
 * What every SQL statement of one SensorThings request is built with: its bind parameters and
 * the asking principal's scope, already decided by core/access/access.ts (visible device ids, and
 * the SQL restricting readings rows to its area). Values always travel as parameters.
 */
export class StaSql {
  readonly params = new Params();
  private visibleParam: string | undefined;

  constructor(
    /** Devices the principal may see; null: all of them. */
    readonly visible: readonly number[] | null,
    /** Restricts a readings row (columns of `r`) to the principal's area; undefined: no area. */
    readonly readingsArea: ((cols: { deviceId: string; lng: string; lat: string; cell: string }) => string | undefined) | undefined,
  ) {}

  /** SQL: the device id column `col` is of a visible device. */
  deviceVisible(col: string): string {
    if (this.visible === null) return 'true';
    this.visibleParam ??= this.params.add(this.visible, '::int4[]');
    return `${col} = ANY (${this.visibleParam})`;
  }

  add(value: unknown, cast = ''): string {
    return this.params.add(value, cast);
  }
}
