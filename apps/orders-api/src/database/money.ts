import type { ValueTransformer } from 'typeorm';

/** Whole cents of an amount in currency units (amounts have at most two decimals). */
export const toCents = (amount: number): number => Math.round(amount * 100);

/** Decimal columns come back as strings from PostgreSQL and MySQL; the API speaks numbers. */
export const decimalTransformer: ValueTransformer = {
  to: (value: number | null | undefined) => value,
  from: (value: string | number | null) => (value === null ? null : Number(value)),
};
