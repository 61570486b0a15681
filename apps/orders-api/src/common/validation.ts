import { HttpStatus, ValidationPipe, type ValidationError } from '@nestjs/common';
import { ProblemCode, ProblemException } from './problem';

/** One invalid field of a request body, as the `errors` member of a 400 problem lists it. */
export interface FieldError {
  /** Path of the field, e.g. `items[0].quantity`. */
  field: string;
  /** What is wrong with it. */
  messages: string[];
}

/** Flattens class-validator's nested errors into paths such as `items[0].quantity`. */
export function fieldErrors(errors: ValidationError[], parent = ''): FieldError[] {
  return errors.flatMap((error) => {
    const field = /^\d+$/.test(error.property)
      ? `${parent}[${error.property}]`
      : parent
        ? `${parent}.${error.property}`
        : error.property;
    const own = error.constraints ? [{ field, messages: Object.values(error.constraints) }] : [];
    return [...own, ...fieldErrors(error.children ?? [], field)];
  });
}

/**
 * The app's validation: DTO classes checked by class-validator, unknown properties refused, and
 * every failure a 400 problem listing each invalid field.
 */
export function createValidationPipe(): ValidationPipe {
  return new ValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    stopAtFirstError: false,
    exceptionFactory: (errors) => {
      const list = fieldErrors(errors);
      return new ProblemException(
        HttpStatus.BAD_REQUEST,
        ProblemCode.ValidationFailed,
        'Invalid request',
        list.map((error) => `${error.field}: ${error.messages.join(', ')}`).join('; ') ||
          'The request is invalid.',
        { errors: list },
      );
    },
  });
}
