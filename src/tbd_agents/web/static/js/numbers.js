// How the dashboard writes counts and amounts of money (fixed en-US formats, so figures read the
// same in every browser and tests can compare them).

const numberFormat = new Intl.NumberFormat("en-US");

/** Whole counts: "12,345". */
export function count(n) {
  return numberFormat.format(Math.round(Number(n) || 0));
}

/** US dollars: cents for a dollar and more, four decimals below (model calls are cheap), six
 * below a hundredth of a cent. */
export function money(n) {
  const value = Number(n) || 0;
  if (value === 0) return "$0.00";
  const size = Math.abs(value);
  const digits = size >= 1 ? 2 : size >= 0.0001 ? 4 : 6;
  return `$${value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })}`;
}
